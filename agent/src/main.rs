//! The `interlock` binary: parse the command line, set up logging and
//! signals, then hand over to the library.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use interlock::cli::{AuditCommand, Cli, Command, PolicyCommand, SessionsCommand, WebhookCommand};

/// Exit code for a command the daemon (or a check) answered with "no".
fn code(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("interlock: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(async {
                let shutdown = CancellationToken::new();
                let mut term =
                    signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
                let mut int =
                    signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
                let token = shutdown.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                    token.cancel();
                });
                interlock::run(args.options(), shutdown)
                    .await
                    .context("interlock run")
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Detach { instance, pin_root } => {
            let removed = interlock::ebpf::detach(&pin_root, &instance)?;
            if removed.is_empty() {
                println!("instance {instance}: nothing pinned, nothing to detach");
            }
            for p in removed {
                println!("removed {}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            command: AuditCommand::Pubkey { state_dir },
        } => {
            println!("{}", interlock::audit::public_key(&state_dir)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            command: AuditCommand::Verify { dir, pubkey },
        } => {
            let report = interlock::audit::verify(&dir, pubkey.as_deref())?;
            println!("{report}");
            Ok(if report.problem.is_some() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Sessions {
            command:
                SessionsCommand::List {
                    state_dir,
                    since,
                    identity,
                    target,
                    json,
                },
        } => {
            let now = std::time::SystemTime::now();
            let filter = interlock::sessions::Filter::new(since.as_deref(), identity, target, now)?;
            interlock::sessions::list(&state_dir, &filter, json, &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sessions {
            command: SessionsCommand::Show { id, state_dir },
        } => {
            interlock::sessions::show(&state_dir, &id, &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            id,
            state_dir,
            speed,
            raw,
        } => {
            interlock::sessions::replay(
                &state_dir,
                &id,
                speed,
                raw,
                &mut std::io::stdout().lock(),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Webhook {
            command:
                WebhookCommand::Test {
                    url,
                    secret_file,
                    socket,
                },
        } => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let Some(url) = url else {
                let ok = rt.block_on(interlock::control::webhook_test(
                    &socket,
                    &mut std::io::stdout().lock(),
                ))?;
                return Ok(code(ok));
            };
            let host = interlock::daemon::hostname();
            let (status, body) = rt.block_on(interlock::sinks::send_test(
                &url,
                secret_file.as_deref(),
                &host,
            ))?;
            println!("{status}");
            println!("{body}");
            Ok(code(status.is_success()))
        }
        Command::Approvals { socket, command } => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let ok = rt.block_on(interlock::control::approvals(
                &socket,
                &command,
                &mut std::io::stdout().lock(),
            ))?;
            Ok(code(ok))
        }
        Command::Ca {
            command:
                interlock::cli::CaCommand::Export {
                    ssh,
                    hosts,
                    state_dir,
                },
        } => {
            if !ssh {
                let ca = interlock::postgres::PgCa::load_or_create(&state_dir)?;
                print!("{}", ca.cert_pem());
                return Ok(ExitCode::SUCCESS);
            }
            let ca = interlock::ssh::SshCa::load_or_create(&state_dir)?;
            let patterns: Vec<&str> = hosts.split(',').map(str::trim).collect();
            println!("{}", ca.known_hosts_line(&patterns));
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { socket, json } => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let ok = rt.block_on(interlock::control::status(
                &socket,
                json,
                &mut std::io::stdout().lock(),
            ))?;
            Ok(code(ok))
        }
        Command::Policy {
            command: PolicyCommand::Explain(args),
        } => {
            let ok = interlock::policy::explain_command(
                &args,
                interlock::postgres::classify::for_explain,
                &mut std::io::stdout().lock(),
            )?;
            Ok(code(ok))
        }
        Command::Policy {
            command: PolicyCommand::Check { files },
        } => {
            let mut ok = true;
            for f in files {
                match interlock::policy::load(&f) {
                    Ok(p) => {
                        for w in p.warnings() {
                            eprintln!("{}: warning: {w}", f.display());
                        }
                        println!(
                            "{}: ok ({} targets, {} rules)",
                            f.display(),
                            p.targets().len(),
                            p.rules().len()
                        )
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        ok = false;
                    }
                }
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
