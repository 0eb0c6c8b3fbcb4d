use super::*;

fn pod(policy: &str, containers: &[&str], init: &[&str]) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
        "spec": {
            "restartPolicy": policy,
            "containers": containers.iter().map(|n| json!({"name": n, "image": "busybox"})).collect::<Vec<_>>(),
            "initContainers": init.iter().map(|n| json!({"name": n, "image": "busybox"})).collect::<Vec<_>>(),
        },
    }))
    .unwrap()
}

const S: Nanos = SECOND;

fn sandbox(attempt: u32, ready: bool) -> Sandbox {
    Sandbox {
        id: format!("sb{attempt}"),
        attempt,
        ready,
        created_at: i64::from(attempt),
        ip: ready.then(|| "10.42.0.5".to_string()),
    }
}

fn container(name: &str, attempt: u32, state: State, exit_code: i32) -> RuntimeContainer {
    RuntimeContainer {
        id: format!("{name}-{attempt}"),
        sandbox_id: "sb0".into(),
        name: name.into(),
        attempt,
        state,
        created_at: i64::from(attempt) * 10 * S,
        started_at: i64::from(attempt) * 10 * S + S,
        finished_at: if state == State::Exited {
            i64::from(attempt) * 10 * S + 2 * S
        } else {
            0
        },
        exit_code,
        reason: String::new(),
        message: String::new(),
        image_ref: "sha256:abc".into(),
        started: None,
        ready: None,
        probe_failed: false,
    }
}

fn observed(sandboxes: Vec<Sandbox>, containers: Vec<RuntimeContainer>) -> Observed {
    let mut observed = Observed {
        sandboxes,
        containers,
    };
    observed.sort();
    observed
}

fn actions(plan: Plan) -> Vec<Action> {
    plan.actions
}

#[test]
fn a_new_pod_gets_a_sandbox_then_its_containers() {
    let p = pod("Always", &["a", "b"], &[]);
    let memory = Memory::default();
    assert_eq!(
        actions(plan(&p, &Observed::default(), &memory, "Pending", 0)),
        vec![Action::CreateSandbox { attempt: 0 }]
    );
    let up = observed(vec![sandbox(0, true)], vec![]);
    assert_eq!(
        actions(plan(&p, &up, &memory, "Pending", 0)),
        vec![
            Action::Start {
                index: 0,
                attempt: 0
            },
            Action::Start {
                index: 1,
                attempt: 0
            }
        ]
    );
    let running = observed(
        vec![sandbox(0, true)],
        vec![
            container("a", 0, State::Running, 0),
            container("b", 0, State::Running, 0),
        ],
    );
    assert_eq!(plan(&p, &running, &memory, "Running", 0), Plan::default());
    assert_eq!(phase(&p, &running), "Running");
}

#[test]
fn init_containers_run_one_at_a_time_in_order() {
    let p = pod("Always", &["main"], &["one", "two"]);
    let memory = Memory::default();
    let at = |containers| {
        plan(
            &p,
            &observed(vec![sandbox(0, true)], containers),
            &memory,
            "Pending",
            0,
        )
    };
    assert_eq!(
        actions(at(vec![])),
        vec![Action::StartInit {
            index: 0,
            attempt: 0
        }]
    );
    assert_eq!(
        actions(at(vec![container("one", 0, State::Running, 0)])),
        vec![]
    );
    assert_eq!(
        actions(at(vec![container("one", 0, State::Exited, 0)])),
        vec![Action::StartInit {
            index: 1,
            attempt: 0
        }]
    );
    assert_eq!(
        actions(at(vec![
            container("one", 0, State::Exited, 0),
            container("two", 0, State::Exited, 0)
        ])),
        vec![Action::Start {
            index: 0,
            attempt: 0
        }]
    );
    // A failed init container runs again (first restart at once).
    assert_eq!(
        actions(at(vec![container("one", 0, State::Exited, 1)])),
        vec![Action::StartInit {
            index: 0,
            attempt: 1
        }]
    );
    let never = pod("Never", &["main"], &["one"]);
    let failed = observed(
        vec![sandbox(0, true)],
        vec![container("one", 0, State::Exited, 1)],
    );
    assert_eq!(phase(&never, &failed), "Failed");
}

#[test]
fn crashing_containers_restart_after_a_doubling_back_off() {
    let p = pod("Always", &["a"], &[]);
    let mut memory = Memory::default();
    let crashed = observed(
        vec![sandbox(0, true)],
        vec![container("a", 0, State::Exited, 1)],
    );
    let finished = crashed.containers[0].finished_at;
    // The first restart is at once, and arms a 10 s back-off.
    assert_eq!(
        actions(plan(&p, &crashed, &memory, "Running", finished)),
        vec![Action::Start {
            index: 0,
            attempt: 1
        }]
    );
    memory
        .backoff
        .entry("a".into())
        .or_default()
        .restarted(finished, S);
    let again = observed(
        vec![sandbox(0, true)],
        vec![
            container("a", 1, State::Exited, 1),
            container("a", 0, State::Exited, 1),
        ],
    );
    let finished = again.containers[0].finished_at;
    let waiting = plan(&p, &again, &memory, "Running", finished + S);
    assert_eq!(waiting.actions, vec![]);
    assert_eq!(waiting.wake_at, Some(finished + 10 * S));
    let status = status(
        &p,
        &again,
        &memory,
        &Value::Null,
        &Context {
            node_ip: "192.0.2.1",
            now: finished + S,
        },
    );
    let c = &status["containerStatuses"][0];
    assert_eq!(c["state"]["waiting"]["reason"], "CrashLoopBackOff");
    assert_eq!(
        c["state"]["waiting"]["message"],
        "back-off 10s restarting failed container=a pod=p_ns(u1)"
    );
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 1);
    assert_eq!(c["restartCount"], 1);
    assert_eq!(status["phase"], "Running");
    // After the back-off: restart, removing the dead container but the newest.
    assert_eq!(
        actions(plan(&p, &again, &memory, "Running", finished + 10 * S)),
        vec![
            Action::RemoveContainer { id: "a-0".into() },
            Action::Start {
                index: 0,
                attempt: 2
            }
        ]
    );
    let mut backoff = Backoff::default();
    let delays: Vec<Nanos> = (0..7)
        .map(|_| {
            backoff.restarted(0, S);
            backoff.delay / S
        })
        .collect();
    assert_eq!(delays, vec![10, 20, 40, 80, 160, 300, 300]);
    backoff.restarted(0, 601 * S);
    assert_eq!(backoff.delay, 10 * S);
}

#[test]
fn restart_policies_decide_the_end_of_a_pod() {
    let cases = [
        ("Never", 0, "Succeeded", false),
        ("Never", 1, "Failed", false),
        ("OnFailure", 0, "Succeeded", false),
        ("OnFailure", 1, "Running", true),
        ("Always", 0, "Running", true),
    ];
    for (policy, code, want, restarts) in cases {
        let p = pod(policy, &["a"], &[]);
        let o = observed(
            vec![sandbox(0, true)],
            vec![container("a", 0, State::Exited, code)],
        );
        assert_eq!(phase(&p, &o), want, "{policy} exit {code}");
        let plan = plan(&p, &o, &Memory::default(), "Running", 0);
        if restarts {
            assert!(
                matches!(plan.actions[..], [Action::Start { .. }]),
                "{policy} {code}: {plan:?}"
            );
        } else {
            // The finished pod's sandbox is stopped.
            assert_eq!(
                plan.actions,
                vec![Action::KillPod { grace: 30 }],
                "{policy} {code}"
            );
        }
    }
}

#[test]
fn a_deleted_pod_is_stopped_with_its_grace_then_removed() {
    let mut p = pod("Always", &["a"], &[]);
    p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    ));
    p.metadata.deletion_grace_period_seconds = Some(7);
    let running = observed(
        vec![sandbox(0, true)],
        vec![container("a", 0, State::Running, 0)],
    );
    assert_eq!(
        actions(plan(&p, &running, &Memory::default(), "Running", 0)),
        vec![Action::KillPod { grace: 7 }]
    );
    let stopped = observed(
        vec![sandbox(0, false)],
        vec![container("a", 0, State::Exited, 137)],
    );
    assert_eq!(
        actions(plan(&p, &stopped, &Memory::default(), "Running", 0)),
        vec![Action::RemovePod]
    );
}

#[test]
fn a_dead_sandbox_is_replaced_unless_the_pod_never_restarts() {
    let dead = observed(
        vec![sandbox(0, false)],
        vec![container("a", 0, State::Exited, 0)],
    );
    let p = pod("Always", &["a"], &[]);
    assert_eq!(
        actions(plan(&p, &dead, &Memory::default(), "Running", 0)),
        vec![Action::CreateSandbox { attempt: 1 }]
    );
    let never = pod("Never", &["a"], &[]);
    assert_eq!(
        actions(plan(&never, &dead, &Memory::default(), "Running", 0)),
        vec![]
    );
}

#[test]
fn the_status_has_kubelets_conditions_and_keeps_their_times() {
    let p = pod("Always", &["a", "b"], &[]);
    let o = observed(
        vec![sandbox(0, true)],
        vec![container("a", 0, State::Running, 0)],
    );
    let context = Context {
        node_ip: "192.0.2.1",
        now: 100 * S,
    };
    let first = status(
        &p,
        &o,
        &Memory::default(),
        &json!({"phase": "Pending", "qosClass": "BestEffort"}),
        &context,
    );
    assert_eq!(first["phase"], "Pending");
    assert_eq!(first["podIP"], "10.42.0.5");
    assert_eq!(first["hostIP"], "192.0.2.1");
    assert_eq!(first["qosClass"], "BestEffort");
    let condition = |s: &Value, kind: &str| {
        s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == kind)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        condition(&first, "PodReadyToStartContainers")["status"],
        "True"
    );
    assert_eq!(condition(&first, "Initialized")["status"], "True");
    let not_ready = condition(&first, "Ready");
    assert_eq!(not_ready["status"], "False");
    assert_eq!(not_ready["reason"], "ContainersNotReady");
    assert_eq!(not_ready["message"], "containers with unready status: [b]");
    assert_eq!(
        first["containerStatuses"][1]["state"]["waiting"]["reason"],
        "ContainerCreating"
    );
    // Later, with b running: Ready turns True now; the others keep their time.
    let o = observed(
        vec![sandbox(0, true)],
        vec![
            container("a", 0, State::Running, 0),
            container("b", 0, State::Running, 0),
        ],
    );
    let later = Context {
        node_ip: "192.0.2.1",
        now: 200 * S,
    };
    let second = status(&p, &o, &Memory::default(), &first, &later);
    assert_eq!(second["phase"], "Running");
    assert_eq!(condition(&second, "Ready")["status"], "True");
    assert_eq!(
        condition(&second, "Ready")["lastTransitionTime"],
        time(200 * S)
    );
    assert_eq!(
        condition(&second, "Initialized")["lastTransitionTime"],
        time(100 * S)
    );
    assert_eq!(second["startTime"], time(100 * S));
}

#[test]
fn a_failed_pull_shows_err_image_pull_then_back_off() {
    let p = pod("Always", &["a"], &[]);
    let o = observed(vec![sandbox(0, true)], vec![]);
    let mut memory = Memory::default();
    let mut error = PullError {
        reason: "ErrImagePull",
        message: "not found".into(),
        ..Default::default()
    };
    error.backoff.failed(50 * S);
    error.fresh = true;
    memory.pull_errors.insert("a".into(), error);
    let context = Context {
        node_ip: "192.0.2.1",
        now: 51 * S,
    };
    let reason = |memory: &Memory| {
        status(&p, &o, memory, &Value::Null, &context)["containerStatuses"][0]["state"]["waiting"]["reason"].clone()
    };
    assert_eq!(reason(&memory), "ErrImagePull");
    memory.pull_errors.get_mut("a").unwrap().fresh = false;
    assert_eq!(reason(&memory), "ImagePullBackOff");
    let waiting = plan(&p, &o, &memory, "Pending", 51 * S);
    assert_eq!(waiting.actions, vec![]);
    assert_eq!(waiting.wake_at, Some(60 * S));
    assert_eq!(
        actions(plan(&p, &o, &memory, "Pending", 60 * S)),
        vec![Action::Start {
            index: 0,
            attempt: 0
        }]
    );
}

#[test]
fn probes_decide_readiness_and_a_failed_liveness_probe_restarts() {
    let p = pod("Always", &["a"], &[]);
    let mut c = container("a", 0, State::Running, 0);
    c.ready = Some(false);
    let o = observed(vec![sandbox(0, true)], vec![c.clone()]);
    let context = Context {
        node_ip: "192.0.2.1",
        now: 0,
    };
    let s = status(&p, &o, &Memory::default(), &Value::Null, &context);
    assert_eq!(s["containerStatuses"][0]["ready"], false);
    assert_eq!(s["containerStatuses"][0]["started"], true);
    assert_eq!(s["phase"], "Running");
    c.started = Some(false);
    c.ready = Some(true);
    let o = observed(vec![sandbox(0, true)], vec![c.clone()]);
    let s = status(&p, &o, &Memory::default(), &Value::Null, &context);
    assert_eq!(s["containerStatuses"][0]["started"], false);
    assert_eq!(s["containerStatuses"][0]["ready"], false);
    c.probe_failed = true;
    let o = observed(vec![sandbox(0, true)], vec![c.clone()]);
    assert_eq!(
        actions(plan(&p, &o, &Memory::default(), "Running", 0)),
        vec![Action::KillContainer {
            id: "a-0".into(),
            grace: 30
        }]
    );
    // Each probe's own grace: the startup probe's until the container
    // has started, the liveness probe's after.
    let mut p = p;
    let spec = p.spec.as_mut().unwrap();
    spec.containers[0].startup_probe = Some(k8s_openapi::api::core::v1::Probe {
        termination_grace_period_seconds: Some(3),
        ..Default::default()
    });
    spec.containers[0].liveness_probe = Some(k8s_openapi::api::core::v1::Probe {
        termination_grace_period_seconds: Some(7),
        ..Default::default()
    });
    let grace = |started| {
        let mut c = c.clone();
        c.started = Some(started);
        c.probe_failed = true;
        let o = observed(vec![sandbox(0, true)], vec![c]);
        match actions(plan(&p, &o, &Memory::default(), "Running", 0)).as_slice() {
            [Action::KillContainer { grace, .. }] => *grace,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!((grace(false), grace(true)), (3, 7));
}

#[test]
fn a_pod_past_its_active_deadline_is_stopped_and_failed() {
    let mut p = pod("Always", &["a"], &[]);
    p.spec.as_mut().unwrap().active_deadline_seconds = Some(5);
    let memory = Memory {
        start_time: Some(100 * S),
        ..Default::default()
    };
    let running = observed(
        vec![sandbox(0, true)],
        vec![container("a", 0, State::Running, 0)],
    );
    let early = plan(&p, &running, &memory, "Running", 101 * S);
    assert_eq!(early.actions, vec![]);
    assert_eq!(early.wake_at, Some(105 * S));
    assert_eq!(
        actions(plan(&p, &running, &memory, "Running", 105 * S)),
        vec![Action::KillPod { grace: 30 }]
    );
    let context = Context {
        node_ip: "192.0.2.1",
        now: 105 * S,
    };
    let s = status(
        &p,
        &running,
        &memory,
        &json!({"phase": "Running"}),
        &context,
    );
    assert_eq!(s["phase"], "Failed");
    assert_eq!(s["reason"], "DeadlineExceeded");
    assert_eq!(s["message"], DEADLINE_MESSAGE);
}

#[test]
fn oom_score_adj_follows_the_qos_class_as_kubelets() {
    const GI: u64 = 1 << 30;
    let cases = [
        ("Guaranteed", false, GI, -1000, -997),
        ("Guaranteed", false, GI, 0, 0),
        ("Burstable", true, 0, -1000, -997),
        ("BestEffort", false, 0, 0, 1000),
        ("Burstable", false, 2 * GI, 0, 750),
        ("Burstable", false, 0, 0, 999),
        ("Burstable", false, 8 * GI, 0, 3),
        ("Burstable", false, 100 * GI, 0, 3),
    ];
    for (qos, critical, request, floor, want) in cases {
        assert_eq!(
            oom_score_adj(qos, critical, request, 8 * GI, floor),
            want,
            "{qos} {critical} {request} {floor}"
        );
    }
}

#[test]
fn run_as_non_root_is_checked_against_the_user_and_the_image() {
    let pod = |pod_sc: Value, sc: Value| -> (Pod, Container) {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"securityContext": pod_sc, "containers": [{"name": "c", "securityContext": sc}]},
        }))
        .unwrap();
        let container = pod.spec.as_ref().unwrap().containers[0].clone();
        (pod, container)
    };
    let root = ImageUser {
        uid: Some(0),
        name: String::new(),
    };
    let unset = ImageUser::default();
    let named = ImageUser {
        uid: None,
        name: "web".into(),
    };
    let user = ImageUser {
        uid: Some(1000),
        name: String::new(),
    };
    let (p, c) = pod(json!({}), json!({}));
    assert_eq!(verify_non_root(&p, &c, &root), Ok(()));
    let (p, c) = pod(json!({"runAsNonRoot": true}), json!({}));
    let will_be_root =
        "container has runAsNonRoot and image will run as root (pod: \"p_ns(u1)\", container: c)";
    assert_eq!(verify_non_root(&p, &c, &root), Err(will_be_root.into()));
    assert_eq!(verify_non_root(&p, &c, &unset), Err(will_be_root.into()));
    assert_eq!(verify_non_root(&p, &c, &user), Ok(()));
    assert_eq!(
        verify_non_root(&p, &c, &named),
        Err("container has runAsNonRoot and image has non-numeric user (web), cannot verify user is non-root (pod: \"p_ns(u1)\", container: c)".into())
    );
    let (p, c) = pod(json!({"runAsNonRoot": true}), json!({"runAsUser": 1000}));
    assert_eq!(verify_non_root(&p, &c, &root), Ok(()));
    let (p, c) = pod(json!({"runAsUser": 0}), json!({"runAsNonRoot": true}));
    assert_eq!(
        verify_non_root(&p, &c, &user),
        Err(
            "container's runAsUser breaks non-root policy (pod: \"p_ns(u1)\", container: c)".into()
        )
    );
    let (p, c) = pod(
        json!({"runAsNonRoot": true}),
        json!({"runAsNonRoot": false}),
    );
    assert_eq!(verify_non_root(&p, &c, &root), Ok(()));
}

#[test]
fn under_pressure_new_pods_are_refused_as_kubelet_refuses_them() {
    use std::collections::BTreeSet;
    let mut p = pod("Always", &["a"], &[]);
    p.status = Some(k8s_openapi::api::core::v1::PodStatus {
        qos_class: Some("BestEffort".into()),
        ..Default::default()
    });
    let none = BTreeSet::new();
    let memory = BTreeSet::from(["MemoryPressure"]);
    let disk = BTreeSet::from(["DiskPressure"]);
    let both = BTreeSet::from(["DiskPressure", "MemoryPressure"]);
    assert_eq!(refused_under_pressure(&p, &none, false), None);
    assert_eq!(
        refused_under_pressure(&p, &memory, false).as_deref(),
        Some("The node had condition: [MemoryPressure]. ")
    );
    assert_eq!(
        refused_under_pressure(&p, &both, false).as_deref(),
        Some("The node had condition: [DiskPressure MemoryPressure]. ")
    );
    assert_eq!(refused_under_pressure(&p, &disk, true), None);
    // Memory pressure alone spares pods with requests, and pods that
    // tolerate its taint.
    let mut burstable = p.clone();
    burstable.status.as_mut().unwrap().qos_class = Some("Burstable".into());
    assert_eq!(refused_under_pressure(&burstable, &memory, false), None);
    assert!(refused_under_pressure(&burstable, &disk, false).is_some());
    let mut tolerant = p.clone();
    tolerant.spec.as_mut().unwrap().tolerations =
        Some(vec![k8s_openapi::api::core::v1::Toleration {
            key: Some("node.kubernetes.io/memory-pressure".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }]);
    assert_eq!(refused_under_pressure(&tolerant, &memory, false), None);
}

#[test]
fn an_ended_pod_is_killed_with_its_grace_and_reports_why() {
    let p = pod("Always", &["a"], &[]);
    let memory = Memory {
        ending: Some(Ending {
            reason: "Evicted",
            message: "The node was low on resource: memory. ".into(),
            disruption: true,
            grace: 1,
        }),
        ..Default::default()
    };
    let running = observed(
        vec![sandbox(0, true)],
        vec![container("a", 0, State::Running, 0)],
    );
    assert_eq!(
        actions(plan(&p, &running, &memory, "Running", 0)),
        vec![Action::KillPod { grace: 1 }]
    );
    let context = Context {
        node_ip: "192.0.2.1",
        now: 0,
    };
    let s = status(&p, &running, &memory, &Value::Null, &context);
    assert_eq!(s["phase"], "Failed");
    assert_eq!(s["reason"], "Evicted");
    assert_eq!(s["message"], "The node was low on resource: memory. ");
    let target = s["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "DisruptionTarget")
        .unwrap();
    assert_eq!(target["reason"], "TerminationByKubelet");
    // After a restart of the agent (its memory gone), the status keeps it.
    let again = status(&p, &running, &Memory::default(), &s, &context);
    assert_eq!(
        (&again["reason"], &again["phase"]),
        (&s["reason"], &s["phase"])
    );
}

#[test]
fn durations_print_as_go_prints_them() {
    use std::time::Duration;
    for (millis, expected) in [
        (0, "0s"),
        (313, "313ms"),
        (1000, "1s"),
        (1661, "1.661s"),
        (1600, "1.6s"),
        (123_500, "2m3.5s"),
        (3_600_000, "1h0m0s"),
        (3_661_001, "1h1m1.001s"),
    ] {
        assert_eq!(go_duration(Duration::from_millis(millis)), expected);
    }
}
