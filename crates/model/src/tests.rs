//! Unit tests of the vocabulary: schema consistency, time parsing, geometry relations.

use crate::*;

#[test]
fn every_navigation_has_an_inverse() {
    for ty in EntityType::ALL {
        for nav in ty.navigations() {
            let back = ty.inverse(nav);
            assert!(back.is_some(), "{}/{} has no inverse", ty.name(), nav.name);
        }
    }
}

#[test]
fn set_names_round_trip() {
    for ty in EntityType::ALL {
        assert_eq!(EntityType::from_set_name(ty.set_name()), Some(ty));
    }
    assert_eq!(EntityType::from_set_name("Thing"), None);
}

#[test]
fn instants_parse_with_offsets_and_print_in_utc() {
    let t: Instant = "2024-05-01T14:00:00+02:00".parse().unwrap();
    assert_eq!(t.to_string(), "2024-05-01T12:00:00Z");
    let t: Instant = "2024-05-01T12:00:00.250Z".parse().unwrap();
    assert_eq!(t.to_string(), "2024-05-01T12:00:00.25Z");
    assert!("2024-05-01T12:00:00".parse::<Instant>().is_err(), "a date-time without offset is ambiguous");
    assert!("yesterday".parse::<Instant>().is_err());
}

#[test]
fn intervals_parse_in_all_three_forms() {
    let a: Interval = "2024-01-01T00:00:00Z/2024-01-02T00:00:00Z".parse().unwrap();
    let b: Interval = "2024-01-01T00:00:00Z/P1D".parse().unwrap();
    let c: Interval = "P1D/2024-01-02T00:00:00Z".parse().unwrap();
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(a.to_string(), "2024-01-01T00:00:00Z/2024-01-02T00:00:00Z");
    let err = "2024-01-02T00:00:00Z/2024-01-01T00:00:00Z".parse::<Interval>().unwrap_err();
    assert!(matches!(err, TimeError::Reversed(_)));
    assert!("2024-01-01T00:00:00Z".parse::<Interval>().is_err());
}

#[test]
fn geometry_relations() {
    let square = Geometry::from_wkt("POLYGON((0 0, 10 0, 10 10, 0 10, 0 0))").unwrap();
    let inside: Geometry =
        Geometry::from_geojson(&serde_json::json!({"type": "Point", "coordinates": [5, 5]})).unwrap();
    let edge = Geometry::from_wkt("POINT(10 5)").unwrap();
    let far = Geometry::from_wkt("POINT(20 20)").unwrap();
    assert!(inside.within(&square));
    assert!(square.contains(&inside));
    assert!(edge.touches(&square));
    assert!(!edge.within(&square));
    assert!(far.disjoint(&square));
    assert!(square.intersects(&edge));
    assert!(square.relate(&inside, "T*****FF*").unwrap());
    assert!(square.relate(&inside, "bogus").is_err());
    assert_eq!(far.distance(&Geometry::from_wkt("POINT(20 23)").unwrap()), 3.0);
    assert_eq!(Geometry::from_wkt("LINESTRING(0 0, 3 4)").unwrap().length(), 5.0);
}

#[test]
fn bad_geojson_is_an_error_not_a_panic() {
    for bad in [
        serde_json::json!({"type": "Point"}),
        serde_json::json!({"type": "Point", "coordinates": "x"}),
        serde_json::json!(42),
        serde_json::json!({"type": "Feature"}),
    ] {
        assert!(Geometry::from_geojson(&bad).is_err(), "{bad}");
    }
}

#[test]
fn fast_rfc3339_matches_display() {
    for micros in
        [0, 1, 250_000, 1_714_564_800_123_456, -1, -86_400_000_001, 253_402_127_999_999_999, Instant::MIN.micros()]
    {
        let instant = Instant::from_micros(micros);
        let mut fast = String::new();
        instant.write_rfc3339(&mut fast);
        assert_eq!(fast, instant.to_string(), "{micros}");
    }
    let mut seed: u64 = 42;
    for _ in 0..10_000 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let instant = Instant::from_micros((seed >> 1) as i64 % Instant::MAX.micros());
        let mut fast = String::new();
        instant.write_rfc3339(&mut fast);
        assert_eq!(fast, instant.to_string());
    }
}
