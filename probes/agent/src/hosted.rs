//! Whether the agent is the guest's init or a process in a guest someone else
//! booted. As PID 1 of the bpfmatrix initramfs it mounts what it needs, reads the
//! plan at `bpfmatrix_protocol::PLAN_PATH` and powers off at the end. Started by another init (the
//! virtme-ng backend runs `bpfmatrix-agent --plan FILE` through `vng --exec`, on a
//! guest whose root is the host's, shared read-only) it mounts nothing, reads the
//! plan named by `--plan`, and exits instead of powering off; its result port is
//! then whatever the plan names (e.g. `/dev/stdout`).

/// True when the agent is the guest's init (PID 1).
pub fn is_init() -> bool {
    std::process::id() == 1
}

/// The plan to read: `--plan PATH` if given, else `default` (the initramfs's).
pub fn plan_path(default: &str) -> String {
    plan_arg(std::env::args().skip(1)).unwrap_or_else(|| default.to_string())
}

fn plan_arg(mut args: impl Iterator<Item = String>) -> Option<String> {
    while let Some(arg) = args.next() {
        if arg == "--plan" {
            return args.next();
        }
        if let Some(path) = arg.strip_prefix("--plan=") {
            return Some(path.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::plan_arg;

    fn args(a: &[&str]) -> impl Iterator<Item = String> {
        a.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn plan_argument_in_both_spellings() {
        assert_eq!(
            plan_arg(args(&["--plan", "/t/p.json"])).as_deref(),
            Some("/t/p.json")
        );
        assert_eq!(
            plan_arg(args(&["--plan=/t/p.json"])).as_deref(),
            Some("/t/p.json")
        );
        assert_eq!(plan_arg(args(&[])), None);
        assert_eq!(plan_arg(args(&["--plan"])), None);
    }
}
