//! Evaluation is on the hot path of live tail and sinks: typical filters must not allocate per
//! entry. A counting allocator (per thread, so the harness's other threads do not interfere)
//! checks it.

// GlobalAlloc is an unsafe trait; this implementation only counts and forwards to System.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn typical_filters_do_not_allocate_per_entry() {
    let entries = verdict_filter::conformance::entries();
    for query in [
        r#"jsonPayload.disposition = "deny""#,
        r#"resource.labels.cluster_name = "prod-cluster" jsonPayload.dest.pod_namespace = ("shop" OR "default")"#,
        r#"jsonPayload.src.pod_name : "CLIENT" OR jsonPayload.dest.pod_name =~ "^cart-""#,
        r#"timestamp >= "2020-06-13T21:00:00-04:00" timestamp < "2020-06-15" severity >= WARNING"#,
        "jsonPayload.connection.dest_port >= 1024 jsonPayload.count > 1",
        r#"ip_in_net(jsonPayload.connection.src_ip, "10.84.0.0/16") NOT jsonPayload.policies:*"#,
        r#"jsonPayload.policies.name : allow log_id("policy-action") -jsonPayload.enforcement = audit"#,
        r#"coredns "kube-system" sample(insertId, 0.5) SEARCH("`allow monitoring`")"#,
        "sample(jsonPayload.connection.dest_port, 0.5) jsonPayload.src.instance !~ \"^10\\\\.\"",
    ] {
        let filter = verdict_filter::parse(query).unwrap();
        // Warm up: the regex engine builds its per-thread cache on first use.
        let warm: usize = entries.iter().filter(|e| filter.matches(e)).count();
        let before = allocations();
        let mut selected = 0;
        for _ in 0..10 {
            selected += entries.iter().filter(|e| filter.matches(e)).count();
        }
        let allocated = allocations() - before;
        assert_eq!(selected, warm * 10);
        assert_eq!(allocated, 0, "{query} allocated {allocated} times");
    }
}
