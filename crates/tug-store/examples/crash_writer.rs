//! A writer for the store's crash test: writes concurrently and logs every
//! write the store acknowledged, until it is killed.
//!
//! `crash_writer (--sqlite PATH | --etcd URL) --log FILE --writers N`
//!
//! Writer `i` keeps a counter in key `/crash/counter/<i>` (it continues from
//! the stored value after a restart) and alternately creates and deletes
//! `/crash/flip/<i>`. Each acknowledged write appends one line to the log:
//! `<key> <value|+|-> <revision>`, where `+` is a create of a flip key and
//! `-` its delete.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use tug_store::{Bytes, Config, Error, PutOptions, Store, etcd, sqlite};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value_of = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let config = match (value_of("--sqlite"), value_of("--etcd")) {
        (Some(path), None) => Config::Sqlite(sqlite::Config { path: path.into() }),
        (None, Some(url)) => Config::Etcd(etcd::Config::from_endpoints(&url)?),
        _ => bail!("give one of --sqlite PATH or --etcd URL"),
    };
    let log = value_of("--log").context("--log FILE is required")?;
    let writers: usize = value_of("--writers").unwrap_or("8".into()).parse()?;
    let log = Arc::new(Mutex::new(
        OpenOptions::new().create(true).append(true).open(&log)?,
    ));
    let store = tug_store::open(config).await?;
    println!("ready");
    let mut tasks = Vec::new();
    for i in 0..writers {
        tasks.push(tokio::spawn(write_forever(store.clone(), log.clone(), i)));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

fn record(log: &Mutex<std::fs::File>, line: String) -> anyhow::Result<()> {
    // One write per line, appended: a kill never leaves half a line.
    log.lock().unwrap().write_all(line.as_bytes())?;
    Ok(())
}

async fn write_forever(
    store: Arc<dyn Store>,
    log: Arc<Mutex<std::fs::File>>,
    i: usize,
) -> anyhow::Result<()> {
    let counter = format!("/crash/counter/{i}");
    let flip = format!("/crash/flip/{i}");
    let current = store.get(&counter, None).await?.kv;
    let (mut value, mut revision) = match current {
        Some(kv) => (
            std::str::from_utf8(&kv.value)?.parse::<u64>()?,
            kv.mod_revision,
        ),
        None => (0, 0),
    };
    let mut flip_revision = store.get(&flip, None).await?.kv.map(|kv| kv.mod_revision);
    loop {
        value += 1;
        let bytes = Bytes::from(value.to_string());
        let written = if revision == 0 {
            store.create(&counter, bytes, PutOptions::default()).await?
        } else {
            store
                .update(&counter, bytes, revision, PutOptions::default())
                .await?
        };
        revision = written.mod_revision;
        record(&log, format!("{counter} {value} {revision}\n"))?;

        flip_revision = match flip_revision {
            None => {
                let kv = store
                    .create(&flip, Bytes::from_static(b"x"), PutOptions::default())
                    .await?;
                record(&log, format!("{flip} + {}\n", kv.mod_revision))?;
                Some(kv.mod_revision)
            }
            Some(expected) => match store.delete(&flip, Some(expected)).await {
                Ok(deleted) => {
                    record(&log, format!("{flip} - {}\n", deleted.revision))?;
                    None
                }
                Err(err @ (Error::Conflict { .. } | Error::NotFound { .. })) => {
                    bail!("nobody else writes {flip}: {err}")
                }
                Err(err) => return Err(err.into()),
            },
        };
    }
}
