//! What a kernel is, as it was built, before any case is judged: which JIT modes it
//! can run at all, and which kernel modules its guest lacked. Decided once per run
//! ([`KernelFacts::decide`]) from the host's evidence (the kernel's build config:
//! [`ConfigFacts`]) and the guest's (the agent's switch of `bpf_jit_enable`:
//! [`JitSwitch`]), and applied by [`crate::matrix::Cell::judge`] to every cell:
//!
//! - a mode the kernel was built without (CONFIG_BPF_JIT_ALWAYS_ON=y has no
//!   interpreter, no CONFIG_BPF_JIT has no JIT) is a fact of the kernel: its cells
//!   are "not applicable", neither a pass nor a failure;
//! - where the config and the guest disagree about a mode, its cells are errors
//!   naming both (no answer);
//! - a case that needs a module the guest was not given (sch_ingress and cls_bpf
//!   for clsact before 6.6) and did not get its programs running is an error
//!   naming the module and the remedy, never a disagreement about the kernel.

use crate::collect::JitSwitch;
use crate::expect::KernelVersion;
use bpfmatrix_kernels::{config_value, ConfigValue};
use bpfmatrix_protocol::{CaseId, JitMode};
use serde::{Deserialize, Serialize};

/// The config symbols bpfmatrix decides by; [`ConfigFacts`] keeps their lines.
pub const CONFIG_SYMBOLS: [&str; 4] = [
    "CONFIG_BPF_JIT",
    "CONFIG_BPF_JIT_ALWAYS_ON",
    "CONFIG_NET_SCH_INGRESS",
    "CONFIG_NET_CLS_BPF",
];

/// The host's evidence: the kernel's build config, cut to [`CONFIG_SYMBOLS`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ConfigFacts {
    /// Where the config was read ("boot/config-R of the package", "the image's
    /// embedded config (CONFIG_IKCONFIG)"...).
    pub source: String,
    /// The config's own line for each symbol it sets or says is not set, in
    /// [`CONFIG_SYMBOLS`] order; a symbol it does not mention has none.
    pub lines: Vec<String>,
}

impl ConfigFacts {
    /// The facts of a whole config text.
    pub fn from_text(source: &str, text: &str) -> ConfigFacts {
        let lines = CONFIG_SYMBOLS
            .iter()
            .filter_map(|symbol| {
                text.lines()
                    .map(str::trim)
                    .find(|l| {
                        l.strip_prefix(symbol).is_some_and(|r| r.starts_with('='))
                            || *l == format!("# {symbol} is not set")
                    })
                    .map(str::to_string)
            })
            .collect();
        ConfigFacts {
            source: source.to_string(),
            lines,
        }
    }

    pub fn setting(&self, symbol: &str) -> ConfigValue {
        config_value(&self.lines.join("\n"), symbol)
    }

    /// The config's line for `symbol`, or what its silence means.
    pub fn line(&self, symbol: &str) -> String {
        self.lines
            .iter()
            .find(|l| {
                l.strip_prefix(symbol).is_some_and(|r| r.starts_with('='))
                    || l.strip_prefix("# ")
                        .and_then(|r| r.strip_prefix(symbol))
                        .is_some_and(|r| r.starts_with(' '))
            })
            .cloned()
            .unwrap_or_else(|| format!("{symbol} not in the config"))
    }
}

/// A module a case needs that the guest was not given, as the host saw it
/// before the boot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MissingModule {
    /// The module's name ("sch_ingress").
    pub name: String,
    /// What the kernel's config says of it (its line), or none without a config.
    pub config_line: Option<String>,
    /// What gives the guest the module.
    pub remedy: String,
}

impl MissingModule {
    /// The module and what the config says of it.
    fn with_config(&self) -> String {
        let config = match &self.config_line {
            Some(line) if line.ends_with("=m") => {
                format!("the kernel's config builds it as a module: {line}")
            }
            Some(line) => format!("the kernel's config lacks it: {line}"),
            None => "no config tells whether the kernel builds it as a module or lacks it".into(),
        };
        format!("{} ({config})", self.name)
    }
}

/// Why a case that needs `modules` has no answer: each module, what the config
/// says of it, and each remedy once.
pub fn describe_missing(modules: &[MissingModule]) -> String {
    let mut remedies: Vec<&str> = Vec::new();
    for m in modules {
        if !remedies.contains(&m.remedy.as_str()) {
            remedies.push(&m.remedy);
        }
    }
    format!(
        "needs kernel module{} the guest could not load: {}; {}",
        if modules.len() == 1 { "" } else { "s" },
        modules
            .iter()
            .map(MissingModule::with_config)
            .collect::<Vec<_>>()
            .join(", "),
        remedies.join("; ")
    )
}

/// The config symbol of each module a guest may load.
pub fn module_symbol(module: &str) -> Option<&'static str> {
    match module {
        "sch_ingress" => Some("CONFIG_NET_SCH_INGRESS"),
        "cls_bpf" => Some("CONFIG_NET_CLS_BPF"),
        _ => None,
    }
}

/// The modules `wanted` that a kernel with no modules directory lacks: all but
/// those its config builds in. `release` names the folder to pass.
pub fn missing_without_modules(
    wanted: &[&str],
    config: Option<&ConfigFacts>,
    release: Option<&str>,
) -> Vec<MissingModule> {
    wanted
        .iter()
        .filter_map(|&name| {
            let symbol = module_symbol(name);
            let setting = config.zip(symbol).map(|(c, s)| c.setting(s));
            if setting == Some(ConfigValue::Yes) {
                return None;
            }
            let dir = format!(".../lib/modules/{}", release.unwrap_or("RELEASE"));
            let remedy = match setting {
                Some(ConfigValue::NotSet) => format!(
                    "build the kernel with {}=m or =y",
                    symbol.expect("a setting needs a symbol")
                ),
                _ => format!(
                    "pass the kernel's modules with --modules DIR ({dir}), or give the kernel as its package (.deb) with its modules"
                ),
            };
            Some(MissingModule {
                name: name.to_string(),
                config_line: config.zip(symbol).map(|(c, s)| c.line(s)),
                remedy,
            })
        })
        .collect()
}

/// Whether a case needs clsact on lo, hence sch_ingress and cls_bpf: its tc
/// programs attach there before 6.6, where aya 0.14 attaches through TCX instead.
fn needs_clsact(case: CaseId, version: Option<KernelVersion>) -> bool {
    matches!(
        case,
        CaseId::FentryTcLoopback | CaseId::SeedFentryFexitTcIcmp
    ) && version.is_none_or(|v| v < KernelVersion(6, 6))
}

/// Whether a kernel runs a JIT mode.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ModeStatus {
    /// It runs, or nothing says it cannot.
    Runs,
    /// The kernel was built without it: its cells are not applicable.
    Absent {
        /// "no interpreter in this kernel (CONFIG_BPF_JIT_ALWAYS_ON=y)".
        what: String,
        /// Each side's evidence, the config's first.
        evidence: Vec<String>,
    },
    /// The config and the guest disagree: its cells are errors.
    Contradicted { reason: String },
}

/// One JIT mode of a kernel and whether it runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ModeFact {
    pub jit: JitMode,
    #[serde(flatten)]
    pub status: ModeStatus,
}

/// The short name of a mode a kernel lacks, for summaries: "no interpreter".
pub fn lacks(jit: JitMode) -> &'static str {
    match jit {
        JitMode::Jit => "no JIT",
        JitMode::Interpreter => "no interpreter",
    }
}

/// Everything about a kernel that every cell is judged with: the host's evidence,
/// and what it and the guest's make of each mode.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct KernelFacts {
    /// The kernel's config, when one was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigFacts>,
    /// Modules the cases need that the guest was not given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_modules: Vec<MissingModule>,
    /// Every mode the config or the guest has something to say of; a mode not
    /// listed runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modes: Vec<ModeFact>,
}

impl KernelFacts {
    /// Decides each mode of `modes` from the config and the agent's switches.
    pub fn decide(
        config: Option<ConfigFacts>,
        missing_modules: Vec<MissingModule>,
        switches: &[JitSwitch],
        modes: &[JitMode],
    ) -> KernelFacts {
        let modes = modes
            .iter()
            .map(|&jit| ModeFact {
                jit,
                status: decide_mode(
                    jit,
                    config.as_ref(),
                    switches.iter().rev().find(|s| s.mode == jit),
                ),
            })
            .filter(|f| f.status != ModeStatus::Runs)
            .collect();
        KernelFacts {
            config,
            missing_modules,
            modes,
        }
    }

    pub fn mode(&self, jit: JitMode) -> &ModeStatus {
        self.modes
            .iter()
            .find(|f| f.jit == jit)
            .map_or(&ModeStatus::Runs, |f| &f.status)
    }

    /// What the kernel lacks of `jit`, when it lacks it.
    pub fn absent(&self, jit: JitMode) -> Option<&str> {
        match self.mode(jit) {
            ModeStatus::Absent { what, .. } => Some(what),
            _ => None,
        }
    }

    /// The modules a case needs and the guest lacked, on a kernel of `version`.
    pub fn missing_for(&self, case: CaseId, version: Option<KernelVersion>) -> &[MissingModule] {
        if needs_clsact(case, version) {
            &self.missing_modules
        } else {
            &[]
        }
    }
}

/// What one side says of a mode: the kernel has it, lacks it, or it cannot tell.
enum Side {
    Has(String),
    Lacks(String),
    Unknown,
}

fn config_side(jit: JitMode, config: Option<&ConfigFacts>) -> Side {
    let Some(c) = config else {
        return Side::Unknown;
    };
    let jit_built = c.setting("CONFIG_BPF_JIT") == ConfigValue::Yes;
    match jit {
        JitMode::Jit if jit_built => Side::Has(c.line("CONFIG_BPF_JIT")),
        JitMode::Jit => Side::Lacks(c.line("CONFIG_BPF_JIT")),
        JitMode::Interpreter if c.setting("CONFIG_BPF_JIT_ALWAYS_ON") == ConfigValue::Yes => {
            Side::Lacks(c.line("CONFIG_BPF_JIT_ALWAYS_ON"))
        }
        JitMode::Interpreter if !jit_built => Side::Has(c.line("CONFIG_BPF_JIT")),
        JitMode::Interpreter => Side::Has(c.line("CONFIG_BPF_JIT_ALWAYS_ON")),
    }
}

const SYSCTL: &str = "net.core.bpf_jit_enable";

fn guest_side(jit: JitMode, switch: Option<&JitSwitch>) -> Side {
    let Some(s) = switch else {
        return Side::Unknown;
    };
    match (jit, s.sysctl_readback.as_deref(), &s.error) {
        (JitMode::Jit, None, _) => Side::Lacks(format!("the guest has no {SYSCTL}")),
        (JitMode::Interpreter, None, None) => Side::Has(format!(
            "the guest has no {SYSCTL}, so its programs are interpreted"
        )),
        (JitMode::Interpreter, Some("1"), Some(error)) => Side::Lacks(format!(
            "the guest's write of 0 to {SYSCTL} was refused: {error}"
        )),
        (_, Some(value), None) if value == jit.sysctl_value() => {
            Side::Has(format!("the guest's {SYSCTL} reads back {value}"))
        }
        // Any other failure to switch is the agent's error, in the cells.
        _ => Side::Unknown,
    }
}

fn decide_mode(
    jit: JitMode,
    config: Option<&ConfigFacts>,
    switch: Option<&JitSwitch>,
) -> ModeStatus {
    let built_without = match jit {
        JitMode::Jit => "CONFIG_BPF_JIT is not set",
        JitMode::Interpreter => "CONFIG_BPF_JIT_ALWAYS_ON=y",
    };
    let source = config.map(|c| c.source.as_str()).unwrap_or_default();
    match (config_side(jit, config), guest_side(jit, switch)) {
        (Side::Lacks(host), Side::Lacks(guest)) => ModeStatus::Absent {
            what: format!("{} in this kernel ({built_without})", lacks(jit)),
            evidence: vec![format!("{host}, in {source}"), guest],
        },
        // A guest that did not say (it died first) leaves the config to decide.
        (Side::Lacks(host), Side::Unknown) => ModeStatus::Absent {
            what: format!("{} in this kernel ({built_without})", lacks(jit)),
            evidence: vec![format!("{host}, in {source}")],
        },
        (Side::Unknown, Side::Lacks(guest)) => ModeStatus::Absent {
            what: format!(
                "{} in this kernel (no kernel config found: the guest's evidence alone)",
                lacks(jit)
            ),
            evidence: vec![guest],
        },
        (Side::Lacks(config_says), Side::Has(guest_says))
        | (Side::Has(config_says), Side::Lacks(guest_says)) => ModeStatus::Contradicted {
            reason: format!(
                "{jit} mode: the kernel's config ({source}) says {config_says}, but {guest_says}"
            ),
        },
        _ => ModeStatus::Runs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> ConfigFacts {
        ConfigFacts::from_text("boot/config-R of the package", text)
    }

    fn switch(mode: JitMode, readback: Option<&str>, error: Option<&str>) -> JitSwitch {
        JitSwitch {
            mode,
            sysctl_readback: readback.map(str::to_string),
            error: error.map(str::to_string),
        }
    }

    const ALWAYS_ON: &str =
        "CONFIG_BPF_JIT=y\nCONFIG_BPF_JIT_ALWAYS_ON=y\nCONFIG_NET_SCH_INGRESS=m\n";
    const DEBIAN: &str =
        "CONFIG_BPF_JIT=y\n# CONFIG_BPF_JIT_ALWAYS_ON is not set\nCONFIG_BPF_JIT_DEFAULT_ON=y\n";
    const REFUSED: &str =
        "write \"0\" to /proc/sys/net/core/bpf_jit_enable: Invalid argument (os error 22) (bpf_jit_enable reads back 1)";

    #[test]
    fn the_config_keeps_the_lines_that_decide_and_reads_their_settings() {
        let c = config(&format!(
            "# comment\n{DEBIAN}CONFIG_NET_CLS_BPF=m\nCONFIG_BPF_JIT_X=y\n"
        ));
        assert_eq!(
            c.lines,
            [
                "CONFIG_BPF_JIT=y",
                "# CONFIG_BPF_JIT_ALWAYS_ON is not set",
                "CONFIG_NET_CLS_BPF=m"
            ]
        );
        assert_eq!(c.setting("CONFIG_BPF_JIT"), ConfigValue::Yes);
        assert_eq!(c.setting("CONFIG_BPF_JIT_ALWAYS_ON"), ConfigValue::NotSet);
        assert_eq!(c.setting("CONFIG_NET_CLS_BPF"), ConfigValue::Module);
        assert_eq!(c.setting("CONFIG_NET_SCH_INGRESS"), ConfigValue::NotSet);
        assert_eq!(
            c.line("CONFIG_BPF_JIT_ALWAYS_ON"),
            "# CONFIG_BPF_JIT_ALWAYS_ON is not set"
        );
        assert_eq!(
            c.line("CONFIG_NET_SCH_INGRESS"),
            "CONFIG_NET_SCH_INGRESS not in the config"
        );
    }

    #[test]
    fn no_interpreter_is_absent_when_config_and_guest_both_say_so() {
        let sw = [
            switch(JitMode::Jit, Some("1"), None),
            switch(JitMode::Interpreter, Some("1"), Some(REFUSED)),
        ];
        let f = KernelFacts::decide(Some(config(ALWAYS_ON)), vec![], &sw, &JitMode::ALL);
        assert_eq!(f.mode(JitMode::Jit), &ModeStatus::Runs);
        assert_eq!(
            f.mode(JitMode::Interpreter),
            &ModeStatus::Absent {
                what: "no interpreter in this kernel (CONFIG_BPF_JIT_ALWAYS_ON=y)".into(),
                evidence: vec![
                    "CONFIG_BPF_JIT_ALWAYS_ON=y, in boot/config-R of the package".into(),
                    format!(
                        "the guest's write of 0 to net.core.bpf_jit_enable was refused: {REFUSED}"
                    ),
                ]
            }
        );
    }

    #[test]
    fn without_a_config_the_guest_decides_and_the_reason_says_so() {
        let sw = [switch(JitMode::Interpreter, Some("1"), Some(REFUSED))];
        let f = KernelFacts::decide(None, vec![], &sw, &[JitMode::Interpreter]);
        assert_eq!(
            f.absent(JitMode::Interpreter),
            Some("no interpreter in this kernel (no kernel config found: the guest's evidence alone)")
        );
    }

    #[test]
    fn a_kernel_without_the_jit_has_only_the_interpreter() {
        let sw = [
            switch(
                JitMode::Jit,
                None,
                Some("open /proc/sys/net/core/bpf_jit_enable: No such file or directory"),
            ),
            switch(JitMode::Interpreter, None, None),
        ];
        let c = config("# CONFIG_BPF_JIT is not set\n");
        let f = KernelFacts::decide(Some(c), vec![], &sw, &JitMode::ALL);
        assert_eq!(
            f.absent(JitMode::Jit),
            Some("no JIT in this kernel (CONFIG_BPF_JIT is not set)")
        );
        assert_eq!(f.mode(JitMode::Interpreter), &ModeStatus::Runs);
    }

    #[test]
    fn config_and_guest_that_disagree_are_an_error_naming_both() {
        // The config says there is an interpreter; the guest could not switch to it.
        let sw = [switch(JitMode::Interpreter, Some("1"), Some(REFUSED))];
        let f = KernelFacts::decide(Some(config(DEBIAN)), vec![], &sw, &[JitMode::Interpreter]);
        let ModeStatus::Contradicted { reason } = f.mode(JitMode::Interpreter) else {
            panic!("{f:?}");
        };
        assert!(reason.starts_with("interpreter mode: the kernel's config (boot/config-R of the package) says # CONFIG_BPF_JIT_ALWAYS_ON is not set, but the guest's write of 0"), "{reason}");
        // And the other way round: the config lacks it, the guest ran it.
        let sw = [switch(JitMode::Interpreter, Some("0"), None)];
        let f = KernelFacts::decide(
            Some(config(ALWAYS_ON)),
            vec![],
            &sw,
            &[JitMode::Interpreter],
        );
        let ModeStatus::Contradicted { reason } = f.mode(JitMode::Interpreter) else {
            panic!("{f:?}");
        };
        assert_eq!(reason, "interpreter mode: the kernel's config (boot/config-R of the package) says CONFIG_BPF_JIT_ALWAYS_ON=y, but the guest's net.core.bpf_jit_enable reads back 0");
    }

    #[test]
    fn a_debian_kernel_runs_both_modes() {
        let sw = [
            switch(JitMode::Jit, Some("1"), None),
            switch(JitMode::Interpreter, Some("0"), None),
        ];
        let f = KernelFacts::decide(Some(config(DEBIAN)), vec![], &sw, &JitMode::ALL);
        assert!(f.modes.is_empty(), "{f:?}");
    }

    #[test]
    fn a_module_is_missing_unless_the_config_builds_it_in() {
        let c = config("CONFIG_NET_SCH_INGRESS=m\nCONFIG_NET_CLS_BPF=y\n");
        let missing =
            missing_without_modules(&["sch_ingress", "cls_bpf"], Some(&c), Some("5.4.286"));
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert_eq!(
            describe_missing(&missing),
            "needs kernel module the guest could not load: sch_ingress (the kernel's config builds it as a module: CONFIG_NET_SCH_INGRESS=m); pass the kernel's modules with --modules DIR (.../lib/modules/5.4.286), or give the kernel as its package (.deb) with its modules"
        );
        let c = config("CONFIG_NET_SCH_INGRESS=m\n");
        let both = missing_without_modules(&["sch_ingress", "cls_bpf"], Some(&c), Some("5.4.286"));
        assert_eq!(
            describe_missing(&both),
            "needs kernel modules the guest could not load: sch_ingress (the kernel's config builds it as a module: CONFIG_NET_SCH_INGRESS=m), cls_bpf (the kernel's config lacks it: CONFIG_NET_CLS_BPF not in the config); pass the kernel's modules with --modules DIR (.../lib/modules/5.4.286), or give the kernel as its package (.deb) with its modules; build the kernel with CONFIG_NET_CLS_BPF=m or =y"
        );
        let unknown = missing_without_modules(&["cls_bpf"], None, None);
        assert!(
            describe_missing(&unknown).contains("no config tells"),
            "{unknown:?}"
        );
    }

    #[test]
    fn only_the_clsact_cases_before_6_6_need_the_modules() {
        let f = KernelFacts {
            missing_modules: missing_without_modules(&["sch_ingress"], None, None),
            ..KernelFacts::default()
        };
        let v54 = Some(KernelVersion(5, 4));
        assert_eq!(f.missing_for(CaseId::FentryTcLoopback, v54).len(), 1);
        assert_eq!(f.missing_for(CaseId::SeedFentryFexitTcIcmp, v54).len(), 1);
        assert!(f.missing_for(CaseId::FentryTcTestRun, v54).is_empty());
        assert!(f
            .missing_for(CaseId::FentryTcLoopback, Some(KernelVersion(6, 6)))
            .is_empty());
    }

    /// What a real 5.4.286 built with CONFIG_BPF_JIT_ALWAYS_ON=y sent home, and
    /// the config lines the host read from its image (tests/data/jit-always-on/).
    const REAL_WITH_MODULES: &str =
        include_str!("../tests/data/jit-always-on/5.4.286-with-modules.matrix.json");
    const REAL_WITHOUT_MODULES: &str =
        include_str!("../tests/data/jit-always-on/5.4.286-without-modules.matrix.json");

    #[test]
    fn a_real_kernel_without_an_interpreter_is_judged_again_from_its_records() {
        use crate::matrix::Verdict;
        let m = crate::report::json::from_json(REAL_WITH_MODULES).unwrap();
        let run = &m.runs[0];
        assert_eq!(run.guest_release.as_deref(), Some("5.4.286"));
        assert_eq!(run.cells.len(), 24);
        for cell in &run.cells {
            match cell.jit {
                JitMode::Jit => assert!(cell.agrees(), "{cell:#?}"),
                JitMode::Interpreter => assert_eq!(
                    cell.verdict,
                    Verdict::NotApplicable {
                        reason: "no interpreter in this kernel (CONFIG_BPF_JIT_ALWAYS_ON=y)".into()
                    }
                ),
            }
        }
        assert!(m.all_agree());
        assert_eq!(
            crate::report::verdict_line(&m),
            "OK: 12 cells agree with the documented kernel facts, 0 disagree, 0 without an answer, 12 not applicable (5.4aon: no interpreter)"
        );
    }

    #[test]
    fn the_real_guests_switches_decide_alone_without_a_config_and_contradict_a_wrong_one() {
        let m = crate::report::json::from_json(REAL_WITH_MODULES).unwrap();
        let switches = &m.runs[0].jit_switches;
        let alone = KernelFacts::decide(None, vec![], switches, &JitMode::ALL);
        assert_eq!(
            alone.absent(JitMode::Interpreter),
            Some("no interpreter in this kernel (no kernel config found: the guest's evidence alone)")
        );
        assert_eq!(alone.mode(JitMode::Jit), &ModeStatus::Runs);
        // Debian's config has an interpreter; this guest could not switch to it.
        let debian = config(DEBIAN);
        let wrong = KernelFacts::decide(Some(debian), vec![], switches, &JitMode::ALL);
        assert!(
            matches!(wrong.mode(JitMode::Interpreter), ModeStatus::Contradicted { reason } if reason.contains("# CONFIG_BPF_JIT_ALWAYS_ON is not set, but the guest's write of 0")),
            "{wrong:?}"
        );
    }

    #[test]
    fn a_real_kernel_without_its_modules_has_errors_naming_them_and_no_disagreement() {
        use crate::matrix::Verdict;
        let m = crate::report::json::from_json(REAL_WITHOUT_MODULES).unwrap();
        let run = &m.runs[0];
        let mut errors = Vec::new();
        for cell in &run.cells {
            assert!(
                !matches!(cell.verdict, Verdict::Disagrees { .. }),
                "{cell:#?}"
            );
            if let Verdict::NoAnswer { reason } = &cell.verdict {
                errors.push((cell.case, reason.clone()));
            }
        }
        let cases: Vec<CaseId> = errors.iter().map(|(c, _)| *c).collect();
        assert_eq!(
            cases,
            [CaseId::FentryTcLoopback, CaseId::SeedFentryFexitTcIcmp]
        );
        for (_, reason) in &errors {
            assert!(reason.starts_with("needs kernel modules the guest could not load: sch_ingress (the kernel's config builds it as a module: CONFIG_NET_SCH_INGRESS=m), cls_bpf (the kernel's config builds it as a module: CONFIG_NET_CLS_BPF=m); pass the kernel's modules with --modules DIR (.../lib/modules/5.4.286)"), "{reason}");
        }
        // The guest's own words are kept: the qdisc the kernel did not know.
        let rec = run
            .cell(CaseId::FentryTcLoopback, JitMode::Jit)
            .and_then(|c| c.record.as_ref())
            .unwrap();
        assert!(
            matches!(&rec.outcome, bpfmatrix_protocol::Outcome::Rejected { errno: 2, step, .. } if step == "add clsact qdisc on lo"),
            "{rec:?}"
        );
        assert!(!m.all_agree());
    }
}
