//! `cargo xtask lab run`: the host's build, one VM per kernel, one after
//! the other (emulated VMs need a whole core each), the command run as root
//! in each, and a summary of boot and command times.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::vm::Vm;
use super::{Kernel, bundle, image, say};
use crate::build_cmd;
use crate::util::{self, Workspace};

/// Options of `cargo xtask lab run`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Which kernel(s) to boot.
    #[arg(long, default_value = "all")]
    kernel: KernelChoice,
    /// Put the release build of interlock in the guests (default: debug).
    #[arg(long)]
    release: bool,
    /// The command to run as root in each guest, in /lab (the bundle);
    /// default: the smoke suite (`/lab/xtask lab smoke`).
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum KernelChoice {
    #[value(name = "6.1")]
    K6_1,
    #[value(name = "6.12")]
    K6_12,
    All,
}

impl KernelChoice {
    fn kernels(self) -> Vec<Kernel> {
        match self {
            KernelChoice::K6_1 => vec![Kernel::K6_1],
            KernelChoice::K6_12 => vec![Kernel::K6_12],
            KernelChoice::All => Kernel::ALL.to_vec(),
        }
    }
}

/// One VM's outcome.
struct Outcome {
    kernel: Kernel,
    release: String,
    boot: Duration,
    command: Duration,
    code: i32,
    serial: String,
}

pub(crate) fn cmd(args: &Args, ws: &Workspace) -> Result<ExitCode> {
    if !util::is_root() {
        bail!("the lab needs root (image build, QEMU): run as root");
    }
    let image = image::ensure()?;
    say("building interlock on the host (the guests run the host's binary: same Debian 12)");
    build_cmd::build(ws, args.release)?;
    let share = bundle::make(ws, "bundle", &ws.interlock_bin(args.release))?;
    // One argument is a shell line as it stands; several are quoted word by word.
    let line = if args.command.is_empty() {
        format!("{}/xtask lab smoke", bundle::GUEST_DIR)
    } else if let [one] = args.command.as_slice() {
        one.clone()
    } else {
        args.command
            .iter()
            .map(|w| shell_word(w))
            .collect::<Vec<_>>()
            .join(" ")
    };

    let mut outcomes = Vec::new();
    for kernel in args.kernel.kernels() {
        let release = image.release(kernel).unwrap_or("?").to_string();
        say(&format!("booting Linux {release} ({})", kernel.series()));
        let dir = ws
            .target_dir()
            .join("lab")
            .join(format!("vm-{}", kernel.series()));
        let mut vm = Vm::boot(&image, kernel, &share, &dir)?;
        let serial = vm.serial().display().to_string();
        let boot = match vm.wait_for_ssh() {
            Ok(t) => t,
            Err(e) => {
                print_summary(&outcomes);
                return Err(e);
            }
        };
        say(&format!(
            "Linux {release} answered after {:.1} s (serial log: {serial})",
            boot.as_secs_f64()
        ));
        let started = Instant::now();
        let status = vm.run(&line)?;
        let took = started.elapsed();
        vm.poweroff()?;
        let code = status.code().unwrap_or(255);
        say(&format!(
            "Linux {release}: `{line}` exited {code} after {:.1} s",
            took.as_secs_f64()
        ));
        outcomes.push(Outcome {
            kernel,
            release,
            boot,
            command: took,
            code,
            serial,
        });
    }
    print_summary(&outcomes);
    let failed = outcomes.iter().find(|o| o.code != 0);
    Ok(match failed {
        None => ExitCode::SUCCESS,
        Some(o) => ExitCode::from(u8::try_from(o.code).unwrap_or(1)),
    })
}

fn print_summary(outcomes: &[Outcome]) {
    eprintln!();
    eprintln!(
        "{:<7} {:<24} {:>8} {:>9} {:>5}  serial log",
        "kernel", "release", "boot s", "command s", "exit"
    );
    for o in outcomes {
        eprintln!(
            "{:<7} {:<24} {:>8.1} {:>9.1} {:>5}  {}",
            o.kernel.series(),
            o.release,
            o.boot.as_secs_f64(),
            o.command.as_secs_f64(),
            o.code,
            o.serial
        );
    }
}

/// One argument as a POSIX shell word (the guest runs the line with sh).
fn shell_word(w: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !w.is_empty() && w.chars().all(safe) {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_the_guest_shell() {
        assert_eq!(shell_word("uname"), "uname");
        assert_eq!(shell_word("-r"), "-r");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
