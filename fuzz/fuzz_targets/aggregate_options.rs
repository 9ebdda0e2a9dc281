//! Fuzzes the aggregation extension's query options (docs/timeseries.md) and the buckets they
//! ask for: parsing must answer or refuse, never panic, and bucket boundaries must stay within
//! their bound and be increasing.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(pairs) = odata::split_query(text) else { return };
    let Ok(Some(request)) = app::aggregate::Request::parse(&pairs, None) else { return };
    let (Some(from), Some(to)) = (request.from, request.to) else { return };
    let bounds = match request.cut {
        app::aggregate::Cut::Calendar(interval) => {
            match app::aggregate::boundaries(interval, &request.zone, from, to) {
                Ok(bounds) => bounds,
                Err(_) => return,
            }
        }
        app::aggregate::Cut::Even(n) => app::aggregate::even_boundaries(n, from, to),
    };
    assert!(bounds.len() >= 2 && bounds.len() <= app::aggregate::MAX_BUCKETS + 1);
    assert!(bounds.windows(2).all(|w| w[0] < w[1]), "boundaries increase");
    assert!(bounds[0] <= from && bounds[bounds.len() - 1] >= to, "the buckets cover the window");
});
