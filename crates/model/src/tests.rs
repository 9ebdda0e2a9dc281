//! Unit tests of the vocabulary: schema consistency, time parsing, geometry relations and device
//! URNs. The URN tests render through one `check` helper into `expect!` snapshots; run
//! `UPDATE_EXPECT=1 cargo test -p model` to update them.

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
fn geojson_shapes_follow_rfc_7946() {
    use serde_json::json;
    let refused = [
        // A short position inside a ring made the geojson crate's conversion panic.
        (json!({"type": "Polygon", "coordinates": [[[0, 0], [100], [1, 1], [0, 0]]]}), "two or more numbers"),
        (json!({"type": "MultiPoint", "coordinates": [[1, 2], [3]]}), "two or more numbers"),
        (json!({"type": "LineString", "coordinates": [[0, 0], [1]]}), "two or more numbers"),
        (json!({"type": "LineString", "coordinates": [[0, 0]]}), "two or more positions"),
        (json!({"type": "MultiLineString", "coordinates": [[[0, 0], [1, 1]], [[2, 2]]]}), "two or more positions"),
        (json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]}), "four or more positions"),
        (json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}), "end with the position"),
        (
            json!({"type": "MultiPolygon", "coordinates": [[[[0, 0], [1, 0], [1, 1], [0, 0]]], [[[5, 5], [6]]]]}),
            "two or more numbers",
        ),
        (
            json!({"type": "GeometryCollection", "geometries": [{"type": "LineString", "coordinates": [[1, 1]]}]}),
            "two or more positions",
        ),
    ];
    for (bad, reason) in refused {
        let error = Geometry::from_geojson_checked(&bad).expect_err(&bad.to_string()).to_string();
        assert!(error.contains(reason), "{bad}: {error}");
        // What is stored reads as before, except what could never have been stored.
        assert_eq!(Geometry::from_geojson(&bad).is_err(), reason == "two or more numbers", "{bad}");
    }
    for good in [
        json!({"type": "Point", "coordinates": [1, 2, 3]}),
        json!({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}),
        json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}),
        json!({"type": "Polygon", "coordinates": []}),
        json!({"type": "MultiPoint", "coordinates": []}),
        json!({"type": "GeometryCollection", "geometries": []}),
    ] {
        assert!(Geometry::from_geojson_checked(&good).is_ok(), "{good}");
    }
}

#[test]
fn wkt_shapes_are_checked() {
    for (bad, reason) in [
        ("LINESTRING(0 0)", "two or more points"),
        ("MULTILINESTRING((0 0, 1 1), (2 2))", "two or more points"),
        ("POLYGON((0 0, 1 1))", "four or more points"),
        ("POLYGON((0 0, 1 0, 1 1, 0 0), (0.1 0.1, 0.2 0.2))", "four or more points"),
        ("GEOMETRYCOLLECTION(LINESTRING(3 3))", "two or more points"),
    ] {
        let error = Geometry::from_wkt(bad).expect_err(bad).to_string();
        assert!(error.contains(reason), "{bad}: {error}");
    }
    for good in ["POLYGON((0 0, 1 0, 1 1, 0 0))", "POLYGON EMPTY", "LINESTRING EMPTY", "LINESTRING(0 0, 1 1)"] {
        assert!(Geometry::from_wkt(good).is_ok(), "{good}");
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

mod urn {
    use super::*;
    use expect_test::{Expect, expect};

    /// Parses `text` and renders the normal form with what the accessors return, or the error
    /// with a caret under the byte it points at. Every accepted URN must parse back from its
    /// normal form to itself.
    fn check(text: &str, expect: Expect) {
        let actual = match DeviceUrn::parse(text) {
            Ok(urn) => {
                assert_eq!(DeviceUrn::parse(urn.as_str()).as_ref(), Ok(&urn), "normal form of `{text}`");
                assert_eq!(urn.to_string(), urn.as_str());
                assert_eq!(urn.as_str().parse::<DeviceUrn>().as_ref(), Ok(&urn));
                let mut out = format!("{urn}\n{:?} identifiers={:?}", urn.kind(), urn.identifiers());
                if !urn.components().is_empty() {
                    out += &format!(" device={} components={:?}", urn.device(), urn.components());
                }
                out
            }
            Err(error) => {
                let column = text.get(..error.position).map_or(error.position, |before| before.chars().count());
                format!("{text}\n{}^ {}", " ".repeat(column), error.message)
            }
        };
        expect.assert_eq(&actual);
    }

    #[test]
    fn rfc_9039_examples() {
        check(
            "urn:dev:mac:0024befffe804ff1",
            expect![[r#"
            urn:dev:mac:0024befffe804ff1
            Mac identifiers=["0024befffe804ff1"]"#]],
        );
        check(
            "urn:dev:ow:10e2073a01080063",
            expect![[r#"
            urn:dev:ow:10e2073a01080063
            Ow identifiers=["10e2073a01080063"]"#]],
        );
        check(
            "urn:dev:ow:264437f5000000ed_humidity",
            expect![[r#"
            urn:dev:ow:264437f5000000ed_humidity
            Ow identifiers=["264437f5000000ed"] device=urn:dev:ow:264437f5000000ed components=["humidity"]"#]],
        );
        check(
            "urn:dev:ow:264437f5000000ed_temperature",
            expect![[r#"
            urn:dev:ow:264437f5000000ed_temperature
            Ow identifiers=["264437f5000000ed"] device=urn:dev:ow:264437f5000000ed components=["temperature"]"#]],
        );
        check(
            "urn:dev:org:32473-foo",
            expect![[r#"
            urn:dev:org:32473-foo
            Org identifiers=["32473", "foo"]"#]],
        );
        check(
            "urn:dev:os:32473-123456",
            expect![[r#"
            urn:dev:os:32473-123456
            Os identifiers=["32473", "123456"]"#]],
        );
        check(
            "urn:dev:os:32473-12-34-56",
            expect![[r#"
            urn:dev:os:32473-12-34-56
            Os identifiers=["32473", "12-34-56"]"#]],
        );
        check(
            "urn:dev:ops:32473-Refrigerator-5002",
            expect![[r#"
            urn:dev:ops:32473-Refrigerator-5002
            Ops identifiers=["32473", "Refrigerator", "5002"]"#]],
        );
    }

    #[test]
    fn eui_48_and_further_identifiers_and_other_subtypes() {
        check(
            "urn:dev:mac:0024be804ff1",
            expect![[r#"
            urn:dev:mac:0024be804ff1
            Mac identifiers=["0024be804ff1"]"#]],
        );
        check(
            "urn:dev:org:32473-foo:bar:baz",
            expect![[r#"
            urn:dev:org:32473-foo:bar:baz
            Org identifiers=["32473", "foo", "bar", "baz"]"#]],
        );
        check(
            "urn:dev:os:32473-12-34-56:rev.2_fan",
            expect![[r#"
            urn:dev:os:32473-12-34-56:rev.2_fan
            Os identifiers=["32473", "12-34-56", "rev.2"] device=urn:dev:os:32473-12-34-56:rev.2 components=["fan"]"#]],
        );
        check(
            "urn:dev:ops:32473-InfraredSensor-001-b",
            expect![[r#"
            urn:dev:ops:32473-InfraredSensor-001-b
            Ops identifiers=["32473", "InfraredSensor", "001-b"]"#]],
        );
        check(
            "urn:dev:ueid:AgAEizrK3Q:x_a_b",
            expect![[r#"
            urn:dev:ueid:AgAEizrK3Q:x_a_b
            Other("ueid") identifiers=["AgAEizrK3Q", "x"] device=urn:dev:ueid:AgAEizrK3Q:x components=["a", "b"]"#]],
        );
    }

    #[test]
    fn case_is_folded_only_where_it_carries_no_meaning() {
        check(
            "URN:DEV:MAC:0024BEFFFE804FF1",
            expect![[r#"
            urn:dev:mac:0024befffe804ff1
            Mac identifiers=["0024befffe804ff1"]"#]],
        );
        check(
            "Urn:Dev:Ow:264437F5000000ED_Humidity",
            expect![[r#"
            urn:dev:ow:264437f5000000ed_Humidity
            Ow identifiers=["264437f5000000ed"] device=urn:dev:ow:264437f5000000ed components=["Humidity"]"#]],
        );
        check(
            "URN:DEV:OPS:32473-Refrigerator-5002",
            expect![[r#"
            urn:dev:ops:32473-Refrigerator-5002
            Ops identifiers=["32473", "Refrigerator", "5002"]"#]],
        );
        check(
            "urn:dev:UEID:AbC",
            expect![[r#"
            urn:dev:ueid:AbC
            Other("ueid") identifiers=["AbC"]"#]],
        );
        assert_eq!(DeviceUrn::parse("URN:dev:mac:0024BEFFFE804FF1"), DeviceUrn::parse("urn:dev:mac:0024befffe804ff1"));
        assert_ne!(DeviceUrn::parse("urn:dev:org:32473-Foo"), DeviceUrn::parse("urn:dev:org:32473-foo"));
    }

    #[test]
    fn device_drops_the_components() {
        let part = DeviceUrn::parse("urn:dev:ow:264437f5000000ed_humidity_inner").unwrap();
        assert_eq!(part.device(), DeviceUrn::parse("urn:dev:ow:264437f5000000ed").unwrap());
        assert_eq!(part.components(), ["humidity", "inner"]);
        assert!(part.device().components().is_empty());
        assert_eq!(part.device().device(), part.device());
    }

    #[test]
    fn not_a_device_urn() {
        check(
            "",
            expect![[r#"

            ^ expected the scheme `urn:`, found the end"#]],
        );
        check(
            "dev:mac:0024befffe804ff1",
            expect![[r#"
            dev:mac:0024befffe804ff1
            ^ expected the scheme `urn:`, found `d`"#]],
        );
        check(
            "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
            expect![[r#"
            urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6
                ^ expected the namespace `dev:`, found `u`"#]],
        );
        check(
            "urn:devx:mac:0024befffe804ff1",
            expect![[r#"
            urn:devx:mac:0024befffe804ff1
                   ^ expected the namespace `dev:`, found `x`"#]],
        );
        check(
            "urn:dev:",
            expect![[r#"
            urn:dev:
                    ^ expected a subtype such as `mac` or `ops` (a letter, then letters and digits), found the end"#]],
        );
        check(
            "urn:dev:mac",
            expect![[r#"
            urn:dev:mac
                       ^ expected `:` after the subtype, found the end"#]],
        );
        check(
            "urn:dev:1mac:0024befffe804ff1",
            expect![[r#"
            urn:dev:1mac:0024befffe804ff1
                    ^ expected a subtype such as `mac` or `ops` (a letter, then letters and digits), found `1`"#]],
        );
        check(
            " urn:dev:mac:0024befffe804ff1",
            expect![[r#"
             urn:dev:mac:0024befffe804ff1
            ^ expected the scheme `urn:`, found ` `"#]],
        );
        check(
            "urn:dev:mac:0024befffe804ff1 ",
            expect![[r#"
            urn:dev:mac:0024befffe804ff1 
                                        ^ expected a hex digit, `_` or the end, found ` `"#]],
        );
        check(
            "urn:dev:mac:0024befffe804ff1#frag",
            expect![[r#"
            urn:dev:mac:0024befffe804ff1#frag
                                        ^ expected a hex digit, `_` or the end, found `#`"#]],
        );
        check(
            "urn:dev:org:32473-foo?=q",
            expect![[r#"
            urn:dev:org:32473-foo?=q
                                 ^ expected a letter, digit, `.`, `-`, `:`, `_` or the end, found `?`"#]],
        );
    }

    #[test]
    fn bad_hex_strings() {
        check(
            "urn:dev:mac:",
            expect![[r#"
            urn:dev:mac:
                        ^ expected an EUI-48 or EUI-64 address (12 or 16 hex digits), found the end"#]],
        );
        check(
            "urn:dev:mac:0024beff80",
            expect![[r#"
            urn:dev:mac:0024beff80
                        ^ expected an EUI-48 or EUI-64 address (12 or 16 hex digits), found 10 hex digits"#]],
        );
        check(
            "urn:dev:mac:0024befffe8040",
            expect![[r#"
            urn:dev:mac:0024befffe8040
                        ^ expected an EUI-48 or EUI-64 address (12 or 16 hex digits), found 14 hex digits"#]],
        );
        check(
            "urn:dev:mac:0024befffe804ff",
            expect![[r#"
            urn:dev:mac:0024befffe804ff
                        ^ expected an EUI-48 or EUI-64 address (12 or 16 hex digits), found 15 hex digits"#]],
        );
        check(
            "urn:dev:mac:0024befffe804fg1",
            expect![[r#"
            urn:dev:mac:0024befffe804fg1
                                      ^ expected a hex digit, `_` or the end, found `g`"#]],
        );
        check(
            "urn:dev:mac:00:24:be:80:4f:f1",
            expect![[r#"
            urn:dev:mac:00:24:be:80:4f:f1
                          ^ expected a hex digit, `_` or the end, found `:`"#]],
        );
        check(
            "urn:dev:mac:0024befffe804ff1:extra",
            expect![[r#"
            urn:dev:mac:0024befffe804ff1:extra
                                        ^ expected a hex digit, `_` or the end, found `:`"#]],
        );
        check(
            "urn:dev:ow:0024be804ff1",
            expect![[r#"
            urn:dev:ow:0024be804ff1
                       ^ expected a 64-bit 1-Wire id (16 hex digits), found 12 hex digits"#]],
        );
        check(
            "urn:dev:mac:hello",
            expect![[r#"
            urn:dev:mac:hello
                        ^ expected an EUI-48 or EUI-64 address (12 or 16 hex digits), found `h`"#]],
        );
    }

    #[test]
    fn bad_enterprise_numbers() {
        check(
            "urn:dev:ops:my-lamp-1234",
            expect![[r#"
            urn:dev:ops:my-lamp-1234
                        ^ expected a Private Enterprise Number (decimal digits, no leading zero), found `m`"#]],
        );
        check(
            "urn:dev:os:032473-123456",
            expect![[r#"
            urn:dev:os:032473-123456
                       ^ expected a Private Enterprise Number without a leading zero, found `0`"#]],
        );
        check(
            "urn:dev:os:0-123456",
            expect![[r#"
            urn:dev:os:0-123456
                       ^ expected a Private Enterprise Number without a leading zero, found `0`"#]],
        );
        check(
            "urn:dev:org:32473",
            expect![[r#"
            urn:dev:org:32473
                             ^ expected `-` after the Private Enterprise Number, found the end"#]],
        );
        check(
            "urn:dev:org:32473foo",
            expect![[r#"
            urn:dev:org:32473foo
                             ^ expected `-` after the Private Enterprise Number, found `f`"#]],
        );
        check(
            "urn:dev:org:32473-",
            expect![[r#"
            urn:dev:org:32473-
                              ^ expected an identifier after the enterprise number (letters, digits, `.` or `-`), found the end"#]],
        );
    }

    #[test]
    fn bad_products_serials_and_identifiers() {
        check(
            "urn:dev:ops:32473-Refrigerator",
            expect![[r#"
            urn:dev:ops:32473-Refrigerator
                                          ^ expected `-` and a serial number after the product name, found the end"#]],
        );
        check(
            "urn:dev:ops:32473-Refrigerator-",
            expect![[r#"
            urn:dev:ops:32473-Refrigerator-
                                           ^ expected a serial number after the product name (letters, digits, `.` or `-`), found the end"#]],
        );
        check(
            "urn:dev:ops:32473--5002",
            expect![[r#"
            urn:dev:ops:32473--5002
                              ^ expected a product name (letters, digits or `.`) after the enterprise number, found `-`"#]],
        );
        check(
            "urn:dev:org:32473-foo:",
            expect![[r#"
            urn:dev:org:32473-foo:
                                  ^ expected an identifier after `:` (letters, digits, `.` or `-`), found the end"#]],
        );
        check(
            "urn:dev:org:32473-fo%6F",
            expect![[r#"
            urn:dev:org:32473-fo%6F
                                ^ expected a letter, digit, `.`, `-`, `:`, `_` or the end, found `%`"#]],
        );
        check(
            "urn:dev:org:32473-f\u{f6}\u{f6}",
            expect![[r#"
            urn:dev:org:32473-föö
                               ^ expected a letter, digit, `.`, `-`, `:`, `_` or the end, found `ö`"#]],
        );
        check(
            "urn:dev:org:32473-foo/bar",
            expect![[r#"
            urn:dev:org:32473-foo/bar
                                 ^ expected a letter, digit, `.`, `-`, `:`, `_` or the end, found `/`"#]],
        );
        check(
            "urn:dev:ueid:",
            expect![[r#"
            urn:dev:ueid:
                         ^ expected an identifier after the subtype (letters, digits, `.` or `-`), found the end"#]],
        );
    }

    #[test]
    fn bad_components() {
        check(
            "urn:dev:ow:264437f5000000ed_",
            expect![[r#"
            urn:dev:ow:264437f5000000ed_
                                        ^ expected a component name after `_` (letters, digits, `.` or `-`), found the end"#]],
        );
        check(
            "urn:dev:ow:264437f5000000ed__humidity",
            expect![[r#"
            urn:dev:ow:264437f5000000ed__humidity
                                        ^ expected a component name after `_` (letters, digits, `.` or `-`), found `_`"#]],
        );
        check(
            "urn:dev:ow:264437f5000000ed_humidity:x",
            expect![[r#"
            urn:dev:ow:264437f5000000ed_humidity:x
                                                ^ expected a letter, digit, `.`, `-`, `_` or the end, found `:`"#]],
        );
        check(
            "urn:dev:ow:264437f5000000ed_h\u{fc}midity",
            expect![[r#"
            urn:dev:ow:264437f5000000ed_hümidity
                                         ^ expected a letter, digit, `.`, `-`, `_` or the end, found `ü`"#]],
        );
    }

    #[test]
    fn length_is_limited() {
        let longest = format!("urn:dev:os:32473-{}", "1".repeat(DeviceUrn::MAX_LEN - 17));
        assert_eq!(longest.len(), DeviceUrn::MAX_LEN);
        assert!(DeviceUrn::parse(&longest).is_ok());
        let error = DeviceUrn::parse(&format!("{longest}1")).unwrap_err();
        expect!["expected the end: a device URN is at most 255 bytes long (this text has 256) at byte 255"]
            .assert_eq(&error.to_string());
        // A huge input is refused by its length alone.
        let huge = "\u{e9}".repeat(1 << 20);
        assert_eq!(DeviceUrn::parse(&huge).unwrap_err().position, DeviceUrn::MAX_LEN);
    }

    /// Without a property-testing crate: prefixes of valid URNs and pseudo-random byte
    /// substitutions into them, which hit both sides of every rule. None may panic, and every
    /// accepted text must be a fixed point of normalisation.
    #[test]
    fn parse_never_panics_and_normal_forms_are_fixed_points() {
        let seeds = [
            "urn:dev:mac:0024befffe804ff1_a",
            "urn:dev:ow:264437f5000000ed_humidity",
            "urn:dev:ops:32473-Refrigerator-5002:x_y",
            "URN:DEV:OS:32473-12-34-56",
            "urn:dev:ueid:Ab.c-d:e",
        ];
        let alphabet = b"urnURNdevDEVmacowsp0123456789abcdefABCDEF:-_.%#?/ \x00\x7f\xc3\xa9";
        let mut seed: u64 = 7;
        let mut accepted = 0;
        for text in seeds {
            for end in 0..=text.len() {
                let _ = DeviceUrn::parse(&text[..end]);
            }
            for _ in 0..5_000 {
                let mut bytes = text.as_bytes().to_vec();
                for _ in 0..3 {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                    let at = (seed >> 33) as usize % bytes.len();
                    bytes[at] = alphabet[(seed >> 17) as usize % alphabet.len()];
                }
                let Ok(text) = std::str::from_utf8(&bytes) else { continue };
                if let Ok(urn) = DeviceUrn::parse(text) {
                    accepted += 1;
                    assert_eq!(DeviceUrn::parse(urn.as_str()).as_ref(), Ok(&urn), "from `{text}`");
                    assert!(urn.as_str().eq_ignore_ascii_case(text), "normalising only changes case: `{text}`");
                }
            }
        }
        assert!(accepted > 1_000, "the mutations should keep many inputs valid, kept {accepted}");
    }
}
