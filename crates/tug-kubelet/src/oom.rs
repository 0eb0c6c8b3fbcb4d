//! OOM kills as the kernel logs them.
//!
//! containerd's shim learns of an OOM kill through the container's cgroup,
//! and on cgroup v1 it listens only once the container has started: a
//! process killed before that (a memory hog on a loaded machine) exits 137
//! with reason `Error`. The kernel logs every kill with the cgroup of its
//! victim (`oom-kill:...,task_memcg=/k8s.io/<container id>,...`), as
//! cAdvisor reads it for kubelet; the agent follows `/dev/kmsg` and
//! remembers the containers killed, to report them OOMKilled.

use std::collections::{HashSet, VecDeque};
use std::io::Read;
use std::sync::{Arc, Mutex, OnceLock};

/// How many killed containers are remembered.
const REMEMBERED: usize = 4096;

/// The containers the kernel's OOM killer has killed, most recent last.
#[derive(Default)]
pub struct Kills {
    inner: Mutex<Remembered>,
}

#[derive(Default)]
struct Remembered {
    order: VecDeque<String>,
    ids: HashSet<String>,
}

impl Kills {
    /// Whether the kernel logged an OOM kill in this container's cgroup.
    pub fn killed(&self, container_id: &str) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.ids.contains(container_id)
    }

    fn record(&self, container_id: String) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !inner.ids.insert(container_id.clone()) {
            return;
        }
        inner.order.push_back(container_id);
        if inner.order.len() > REMEMBERED
            && let Some(oldest) = inner.order.pop_front()
        {
            inner.ids.remove(&oldest);
        }
    }
}

/// The process's watcher of the kernel log, started on first use (one
/// thread, blocked in `read` between records). Where the log cannot be
/// read, nothing is ever recorded and the runtime's reasons stand.
pub fn kills() -> Arc<Kills> {
    static KILLS: OnceLock<Arc<Kills>> = OnceLock::new();
    KILLS
        .get_or_init(|| {
            let kills = Arc::new(Kills::default());
            let recorder = kills.clone();
            let started = std::thread::Builder::new()
                .name("kmsg".into())
                .stack_size(64 * 1024)
                .spawn(move || follow(&recorder));
            if let Err(err) = started {
                tracing::warn!(error = %err, "starting the kernel log reader");
            }
            kills
        })
        .clone()
}

fn follow(kills: &Kills) {
    let mut kmsg = match std::fs::File::open("/dev/kmsg") {
        Ok(file) => file,
        Err(err) => {
            tracing::info!(error = %err, "the kernel log cannot be read: OOM kills are as the runtime reports them");
            return;
        }
    };
    // One record per read; a record is at most a few KiB.
    let mut buffer = vec![0u8; 8192];
    loop {
        match kmsg.read(&mut buffer) {
            Ok(0) => return,
            Ok(n) => {
                // (records are read in place; only a kill allocates)
                if let Ok(record) = std::str::from_utf8(&buffer[..n])
                    && let Some(id) = killed_container(record)
                {
                    kills.record(id);
                }
            }
            // Records overwritten before they were read: go on from the
            // oldest one left.
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => {
                tracing::warn!(error = %err, "reading the kernel log");
                return;
            }
        }
    }
}

/// The container whose cgroup an `oom-kill:` record names as the victim's:
/// the last path element of `task_memcg`, less the prefixes and suffixes
/// the runtime's cgroup drivers add (`cri-containerd-<id>.scope`).
fn killed_container(record: &str) -> Option<String> {
    let (_, message) = record.split_once(';')?;
    let fields = message.trim_end().strip_prefix("oom-kill:")?;
    let memcg = fields
        .split(',')
        .find_map(|field| field.strip_prefix("task_memcg="))?;
    let last = memcg.rsplit('/').next()?;
    let last = last.strip_suffix(".scope").unwrap_or(last);
    let id = last.rsplit(['-', ':']).next()?;
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "1403cdc1a025fc7e6a9af817ac534cc042c37c4e233dfb93623dcc9721f02488";

    #[test]
    fn the_victims_container_is_read_from_an_oom_kill_record() {
        let cgroupfs = format!(
            "3,1201,10680298181,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset={ID},mems_allowed=0,oom_memcg=/k8s.io/{ID},task_memcg=/k8s.io/{ID},task=dd,pid=20059,uid=0\n"
        );
        assert_eq!(killed_container(&cgroupfs).as_deref(), Some(ID));
        let systemd = format!(
            "6,88,5,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/kubepods.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope,task_memcg=/kubepods.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope,task=dd,pid=1,uid=0\n"
        );
        assert_eq!(killed_container(&systemd).as_deref(), Some(ID));
    }

    #[test]
    fn other_records_name_no_container() {
        for record in [
            "6,1202,10680298206,-;Memory cgroup out of memory: Killed process 20059 (dd)\n",
            "4,10,1,-;oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/user.slice,task=x,pid=1,uid=0\n",
            "no separator",
        ] {
            assert_eq!(killed_container(record), None, "{record}");
        }
    }

    #[test]
    fn only_the_latest_kills_are_remembered() {
        let kills = Kills::default();
        for n in 0..=REMEMBERED {
            kills.record(format!("{n:064x}"));
        }
        assert!(!kills.killed(&format!("{:064x}", 0)));
        assert!(kills.killed(&format!("{:064x}", 1)));
        assert!(kills.killed(&format!("{REMEMBERED:064x}")));
    }
}
