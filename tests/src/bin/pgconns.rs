//! Idle PostgreSQL connections for `cargo xtask bench` (the memory scenario), run inside the
//! bench cgroup. Opens N connections (tokio-postgres, no TLS, password from PGPASSWORD), a
//! few at a time, prints one JSON line (how many opened, failures with the first error, the
//! time and the rate), then holds them all idle until stdin has a line or is closed, and
//! exits (closing them).
//!
//!   pgconns ADDR USER DATABASE N [--concurrency C]

use std::{net::SocketAddr, process::ExitCode, sync::Arc, time::Instant};

use serde_json::json;
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    sync::Semaphore,
    task::JoinSet,
};
use tokio_postgres::{Client, Config, NoTls, config::SslMode};

struct Plan {
    addr: SocketAddr,
    user: String,
    database: String,
    count: usize,
    concurrency: usize,
}

fn parse(args: &[String]) -> Result<Plan, String> {
    let mut positional = Vec::new();
    let mut concurrency = 16;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--concurrency" => {
                let c = iter.next().ok_or("--concurrency needs a number")?;
                concurrency = c.parse().map_err(|_| format!("bad --concurrency {c:?}"))?;
            }
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            word => positional.push(word),
        }
    }
    let [addr, user, database, count] = positional[..] else {
        return Err(format!("expected 4 arguments, got {}", positional.len()));
    };
    Ok(Plan {
        addr: addr.parse().map_err(|_| format!("bad address {addr:?}"))?,
        user: user.to_owned(),
        database: database.to_owned(),
        count: count.parse().map_err(|_| format!("bad count {count:?}"))?,
        concurrency: concurrency.max(1),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let plan = match parse(&args) {
        Ok(p) => p,
        Err(why) => {
            eprintln!("pgconns: {why}");
            eprintln!("usage: pgconns ADDR USER DATABASE N [--concurrency C]");
            return ExitCode::from(2);
        }
    };
    let mut config = Config::new();
    config
        .host(plan.addr.ip().to_string())
        .port(plan.addr.port())
        .user(&plan.user)
        .dbname(&plan.database)
        .password(std::env::var("PGPASSWORD").unwrap_or_default())
        .ssl_mode(SslMode::Disable);
    let config = Arc::new(config);
    let permits = Arc::new(Semaphore::new(plan.concurrency));
    let started = Instant::now();
    let mut opening = JoinSet::new();
    for _ in 0..plan.count {
        let config = config.clone();
        let permits = permits.clone();
        opening.spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
            let (client, connection) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            Ok::<Client, String>(client)
        });
    }
    let mut clients = Vec::with_capacity(plan.count);
    let mut first_error = None;
    while let Some(joined) = opening.join_next().await {
        match joined.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(c) => clients.push(c),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let rate = clients.len() as f64 / secs;
    println!(
        "{}",
        json!({
            "count": plan.count,
            "opened": clients.len(),
            "failed": plan.count - clients.len(),
            "first_error": first_error,
            "total_secs": secs,
            "rate_per_sec": rate,
        })
    );
    let mut line = String::new();
    let _ = BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await;
    drop(clients);
    ExitCode::SUCCESS
}
