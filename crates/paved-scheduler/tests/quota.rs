//! Admission against capacity groups: within quota passes; over it names every quota exceeded.

use paved_scheduler::{Ask, CapacityGroup, JobKind, Resources, Tier, Usage, check_quota};

const GIB: u64 = 1 << 30;

fn group(cpu_millis: u64, memory_bytes: u64, tasks: u64) -> CapacityGroup {
    CapacityGroup {
        tenant: "acme".into(),
        tier: Tier::Critical,
        quota: Usage {
            cpu_millis,
            memory_bytes,
            tasks,
        },
    }
}

fn usage(cpu_millis: u64, memory_bytes: u64, tasks: u64) -> Usage {
    Usage {
        cpu_millis,
        memory_bytes,
        tasks,
    }
}

/// `expected`: `None` when admitted, else the error message.
fn check(in_use: Usage, ask: &Ask, expected: Option<&str>) {
    let result = check_quota(&group(8000, 4 * GIB, 10), in_use, ask.demand());
    assert_eq!(
        result.as_ref().err().map(ToString::to_string).as_deref(),
        expected
    );
    if let Err(e) = result {
        assert_eq!(e.code(), "quota_exceeded");
        assert!(!e.retryable());
    }
}

fn ask(cpu_millis: u64, memory_bytes: u64, count: u32) -> Ask {
    Ask::new(
        "web",
        "acme",
        Tier::Critical,
        JobKind::Service,
        Resources::new(cpu_millis, memory_bytes),
        count,
    )
}

#[test]
fn within_quota_is_admitted_up_to_the_limit() {
    check(usage(0, 0, 0), &ask(800, 400 << 20, 10), None);
    check(usage(7000, 3 * GIB, 9), &ask(1000, GIB, 1), None);
    check(usage(8000, 4 * GIB, 10), &ask(0, 0, 0), None);
}

#[test]
fn over_quota_names_each_quota_exceeded() {
    check(
        usage(1000, 3 * GIB + GIB / 2, 2),
        &ask(500, GIB / 2, 2),
        Some(
            "tenant `acme` tier critical: memory quota 4GiB, in use 3.5GiB, job asks 1GiB more; \
             raise the quota with `paved tenants quota` or lower instances or memory",
        ),
    );
    check(
        usage(7500, 0, 9),
        &ask(500, 1 << 20, 2),
        Some(
            "tenant `acme` tier critical: cpu quota 8 cores, in use 7.5 cores, job asks 1 core more; \
             tasks quota 10, in use 9, job asks 2 more; \
             raise the quota with `paved tenants quota` or lower instances or cpu",
        ),
    );
    check(
        usage(0, 0, 0),
        &ask(4250, 3 * GIB, 2),
        Some(
            "tenant `acme` tier critical: cpu quota 8 cores, in use 0 cores, job asks 8.5 cores more; \
             memory quota 4GiB, in use 0B, job asks 6GiB more; \
             raise the quota with `paved tenants quota` or lower instances, cpu or memory",
        ),
    );
}
