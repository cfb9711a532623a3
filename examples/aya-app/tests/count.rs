//! Loads count.o, attaches it to lo and checks what it counts. Needs root (or
//! CAP_BPF + CAP_NET_ADMIN + CAP_SYS_RESOURCE) and lo up; bpfmatrix's guests
//! provide both. Nothing is skipped: a missing precondition fails the test.

use std::net::UdpSocket;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use aya::programs::{ProgramType, Xdp};
use aya_app::{PacketCounter, PROGRAM};

/// lo takes one XDP program per mode; libtest runs tests on parallel threads,
/// so the tests that attach take turns.
static LO: Mutex<()> = Mutex::new(());

fn lo() -> MutexGuard<'static, ()> {
    LO.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A UDP socket on 127.0.0.1 with a port of its own, which nothing else sends to.
fn receiver() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("binding a UDP socket on 127.0.0.1");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("setting a read timeout");
    socket
}

fn port_of(socket: &UdpSocket) -> u16 {
    socket.local_addr().expect("local address").port()
}

fn load(port: u16) -> PacketCounter {
    PacketCounter::load_on("lo", port).unwrap_or_else(|e| {
        panic!("loading and attaching count.o on lo (needs root and a kernel allowing BPF): {e:?}")
    })
}

/// Sends `n` datagrams to `to` and waits until `to` has received all of them,
/// so every one of them has been through lo's receive path (and XDP).
fn send_and_receive(to: &UdpSocket, n: usize) {
    let sender = UdpSocket::bind("127.0.0.1:0").expect("binding the sender");
    let target = to.local_addr().expect("receiver address");
    for i in 0..n {
        let payload = format!("datagram {i}");
        sender
            .send_to(payload.as_bytes(), target)
            .expect("sending a datagram on lo");
    }
    let mut buf = [0u8; 64];
    for i in 0..n {
        let (len, _) = to
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("datagram {i} of {n} to {target} not received: {e}"));
        assert!(len > 0);
    }
}

#[test]
fn counts_every_datagram_to_its_port() {
    const N: usize = 10;
    let _lo = lo();
    let rx = receiver();
    let counter = load(port_of(&rx));
    assert_eq!(counter.count().unwrap(), 0, "count before any traffic");

    send_and_receive(&rx, N);

    assert_eq!(counter.count().unwrap(), N as u64);
}

#[test]
fn ignores_datagrams_to_other_ports() {
    let _lo = lo();
    let counted = receiver();
    let other = receiver();
    let counter = load(port_of(&counted));

    send_and_receive(&other, 7);
    assert_eq!(
        counter.count().unwrap(),
        0,
        "datagrams to port {} were counted for port {}",
        port_of(&other),
        counter.port()
    );

    send_and_receive(&counted, 3);
    assert_eq!(counter.count().unwrap(), 3);
}

#[test]
fn kernel_reports_the_verified_xdp_program() {
    let _lo = lo();
    let rx = receiver();
    let counter = load(port_of(&rx));
    let info = counter.program_info().expect("program info");

    assert_eq!(info.name_as_str(), Some(PROGRAM));
    assert_eq!(info.program_type(), ProgramType::Xdp.into());
    assert_eq!(Xdp::PROGRAM_TYPE, ProgramType::Xdp);
    assert_eq!(info.gpl_compatible(), Some(true));
}
