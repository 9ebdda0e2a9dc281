//! Unit tests of parsing and binding. Each feature has one `check` helper that renders the
//! result (or the error with its kind, option and column) for an `expect!` snapshot; run
//! `UPDATE_EXPECT=1 cargo test -p odata` to update the snapshots.

use crate::*;
use expect_test::{Expect, expect};
use model::EntityType::{self, Datastream, Location, Observation, Thing};
use std::fmt::Write;

/// Encodes what would otherwise change meaning in a query string, so tests can be written with
/// plain spaces and `+`.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            ' ' => out.push_str("%20"),
            '+' => out.push_str("%2B"),
            '%' => out.push_str("%25"),
            '&' => out.push_str("%26"),
            c => out.push(c),
        }
    }
    out
}

fn render_error(error: &ODataError) -> String {
    format!("{:?}: {error}", error.kind)
}

fn render_literal(literal: &Literal) -> String {
    match literal {
        Literal::Null => "null".to_owned(),
        Literal::Boolean(b) => b.to_string(),
        Literal::Integer(i) => i.to_string(),
        Literal::Number(n) => format!("{n:?}"),
        Literal::String(s) => format!("{s:?}"),
        Literal::DateTime(t) => format!("#{t}"),
        Literal::Interval(i) => format!("#{i}"),
        Literal::Duration(micros) => format!("duration({micros}us)"),
        Literal::Geometry(g) => format!("geometry({})", g.to_geojson()),
    }
}

fn render_member(path: &MemberPath) -> String {
    let mut out: Vec<String> = path.hops.iter().map(|hop| hop.name.to_owned()).collect();
    out.push(match &path.member {
        Member::Id => "id".to_owned(),
        Member::Property(p) => p.name.to_owned(),
        Member::Json { property, path } => format!("{}{path:?}", property.name),
    });
    out.join("/")
}

fn render_expr(expr: &Expr) -> String {
    match expr {
        Expr::Literal(literal) => render_literal(literal),
        Expr::Member(path) => render_member(path),
        Expr::Not(e) => format!("(not {})", render_expr(e)),
        Expr::Negate(e) => format!("(- {})", render_expr(e)),
        Expr::Binary { op, left, right } => {
            format!("({} {} {})", format!("{op:?}").to_lowercase(), render_expr(left), render_expr(right))
        }
        Expr::Call { function, args } => {
            let args: Vec<String> = args.iter().map(render_expr).collect();
            format!("{function:?}({})", args.join(", "))
        }
    }
}

fn render_query(query: &Query, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    if let Some(filter) = &query.filter {
        let _ = writeln!(out, "{pad}filter: {}", render_expr(filter));
    }
    if let Some(select) = &query.select {
        let items: Vec<String> = select
            .iter()
            .map(|item| match item {
                SelectItem::Id => "id".to_owned(),
                SelectItem::Property(p) => p.name.to_owned(),
                SelectItem::Navigation(n) => format!("{}(nav)", n.name),
            })
            .collect();
        let _ = writeln!(out, "{pad}select: {}", items.join(", "));
    }
    for order in &query.order_by {
        let direction = if order.descending { "desc" } else { "asc" };
        let _ = writeln!(out, "{pad}orderby: {} {direction}", render_expr(&order.expr));
    }
    if let Some(top) = query.top {
        let _ = writeln!(out, "{pad}top: {top}");
    }
    if query.skip != 0 {
        let _ = writeln!(out, "{pad}skip: {}", query.skip);
    }
    if let Some(count) = query.count {
        let _ = writeln!(out, "{pad}count: {count}");
    }
    if query.result_format != ResultFormat::Default {
        let _ = writeln!(out, "{pad}resultFormat: {:?}", query.result_format);
    }
    for expand in &query.expand {
        let _ = writeln!(out, "{pad}expand {} -> {}", expand.navigation.name, expand.navigation.target);
        render_query(&expand.query, indent + 2, out);
    }
}

/// `query` written back as a raw query string, with its `$top` and `$skip` added as a caller of
/// [`query_options`] does.
fn write_back(query: &Query) -> String {
    let mut pairs: Vec<String> =
        query_options(query).iter().map(|(name, value)| format!("{name}={}", encode(value))).collect();
    if let Some(top) = query.top {
        pairs.push(format!("$top={top}"));
    }
    if query.skip != 0 {
        pairs.push(format!("$skip={}", query.skip));
    }
    pairs.join("&")
}

/// Parsing what `query` is written back as gives an equal `query`.
fn assert_round_trip(query: &Query, entity: EntityType) {
    let written = write_back(query);
    match parse_query(&written, entity, &Limits::default()) {
        Ok(again) => assert_eq!(&again, query, "written back as `{written}`"),
        Err(error) => panic!("`{written}` does not parse: {}", render_error(&error)),
    }
}

/// A `$filter` on `entity`, written unencoded. Every filter that binds must also round-trip.
fn check_filter(entity: EntityType, filter: &str, expect: Expect) {
    let raw = format!("$filter={}", encode(filter));
    let actual = match parse_query(&raw, entity, &Limits::default()) {
        Ok(query) => {
            assert_round_trip(&query, entity);
            query.filter.as_ref().map_or("no filter".to_owned(), render_expr)
        }
        Err(error) => render_error(&error),
    };
    expect.assert_eq(&actual);
}

/// A whole raw (already encoded) query string on `entity`. Every query that binds must also
/// round-trip.
fn check_query(entity: EntityType, raw: &str, expect: Expect) {
    let actual = match parse_query(raw, entity, &Limits::default()) {
        Ok(query) => {
            assert_round_trip(&query, entity);
            let mut out = String::new();
            render_query(&query, 0, &mut out);
            out
        }
        Err(error) => render_error(&error),
    };
    expect.assert_eq(&actual);
}

fn check_path(path: &str, expect: Expect) {
    let actual = match parse_path(path) {
        Ok(resource) => {
            let mut out: Vec<String> = resource
                .segments
                .iter()
                .map(|segment| {
                    let via = segment.via.map_or(String::new(), |nav| format!(" via {}", nav.name));
                    let key = segment.key.map_or(String::new(), |id| format!("({id})"));
                    format!("{}{key}{via}", segment.entity)
                })
                .collect();
            out.push(match resource.tail {
                Tail::None => "tail: none".to_owned(),
                Tail::Property(p) => format!("tail: property {}", p.name),
                Tail::Value(p) => format!("tail: value of {}", p.name),
                Tail::Ref => "tail: $ref".to_owned(),
            });
            out.join("\n")
        }
        Err(error) => render_error(&error),
    };
    expect.assert_eq(&actual);
}

// ---------------------------------------------------------------------------------------------
// $filter: operators and precedence

#[test]
fn or_is_looser_than_and() {
    check_filter(
        Thing,
        "name eq 'a' or name eq 'b' and id gt 1",
        expect![[r#"(or (eq name "a") (and (eq name "b") (gt id 1)))"#]],
    );
}

#[test]
fn comparison_operators_bind_tighter_than_logical_ones() {
    check_filter(
        Thing,
        "id ne 1 and id ge 2 and id lt 3 and id le 4",
        expect!["(and (and (ne id 1) (ge id 2)) (and (lt id 3) (le id 4)))"],
    );
}

#[test]
fn multiplicative_operators_bind_tighter_than_additive_ones() {
    check_filter(Thing, "id add 2 mul 3 eq 7", expect!["(eq (add id (mul 2 3)) 7)"]);
    check_filter(Thing, "id sub 8 div 2 mod 3 eq 1", expect!["(eq (sub id (mod (div 8 2) 3)) 1)"]);
}

#[test]
fn binary_operators_associate_left() {
    check_filter(Thing, "id sub 1 sub 2 eq 0", expect!["(eq (sub (sub id 1) 2) 0)"]);
    check_filter(Thing, "id eq 1 or id eq 2 or id eq 3", expect!["(or (or (eq id 1) (eq id 2)) (eq id 3))"]);
}

#[test]
fn long_or_chains_are_balanced_and_do_not_hit_the_depth_limit() {
    check_filter(
        Thing,
        "id eq 1 or id eq 2 or id eq 3 or id eq 4 or id eq 5",
        expect!["(or (or (or (eq id 1) (eq id 2)) (or (eq id 3) (eq id 4))) (eq id 5))"],
    );
    let alternatives: Vec<String> = (0..1000).map(|i| format!("id eq {i}")).collect();
    let raw = format!("$filter={}", encode(&alternatives.join(" or ")));
    let query = parse_query(&raw, Thing, &Limits::default()).expect("a long chain binds");
    assert_round_trip(&query, Thing);
}

#[test]
fn parentheses_override_precedence() {
    check_filter(Thing, "(id add 2) mul 3 eq 9", expect!["(eq (mul (add id 2) 3) 9)"]);
    check_filter(
        Thing,
        "(name eq 'a' or name eq 'b') and id gt 1",
        expect![[r#"(and (or (eq name "a") (eq name "b")) (gt id 1))"#]],
    );
}

#[test]
fn unary_operators_bind_tightest() {
    check_filter(
        Thing,
        "not startswith(name, 'a') and -id lt -5",
        expect![[r#"(and (not StartsWith(name, "a")) (lt (- id) -5))"#]],
    );
    check_filter(Thing, "not (name eq 'a')", expect![[r#"(not (eq name "a"))"#]]);
    check_filter(Thing, "- - id eq 1", expect!["(eq (- (- id)) 1)"]);
}

#[test]
fn keywords_are_case_sensitive() {
    check_filter(Thing, "name EQ 'a'", expect!["Syntax: $filter: expected an operator after `name` at column 6"]);
}

#[test]
fn missing_operator_or_operand_is_a_syntax_error() {
    check_filter(Thing, "name 'x'", expect!["Syntax: $filter: expected an operator after `name` at column 6"]);
    check_filter(Thing, "name eq", expect!["Syntax: $filter: expected a value after `eq` at column 8"]);
    check_filter(Thing, "eq 'x'", expect!["Syntax: $filter: expected a value, found `eq` at column 1"]);
    check_filter(
        Thing,
        "(name eq 'x'",
        expect!["Syntax: $filter: expected `)` or an operator after `'x'` at column 13"],
    );
    check_filter(Thing, "name eq 'x')", expect!["Syntax: $filter: expected an operator after `'x'` at column 12"]);
    check_filter(Thing, "", expect!["Syntax: $filter: expected a value, found the end at column 1"]);
    check_filter(Thing, "name eq 'x' # comment", expect!["Syntax: $filter: unexpected character `#` at column 13"]);
}

// ---------------------------------------------------------------------------------------------
// $filter: literals

#[test]
fn keyword_and_number_literals() {
    check_filter(
        Observation,
        "result eq null or result eq true or result eq false",
        expect!["(or (or (eq result null) (eq result true)) (eq result false))"],
    );
    check_filter(
        Observation,
        "result eq 42 or result eq -7 or result eq 9223372036854775808",
        expect!["(or (or (eq result 42) (eq result -7)) (eq result 9.223372036854776e18))"],
    );
    check_filter(
        Observation,
        "result eq 1.5 or result eq -2.5e3 or result eq 1E-2",
        expect!["(or (or (eq result 1.5) (eq result -2500.0)) (eq result 0.01))"],
    );
}

#[test]
fn string_literals_unescape_doubled_quotes() {
    check_filter(Thing, "name eq 'it''s' or name eq ''", expect![[r#"(or (eq name "it's") (eq name ""))"#]]);
    check_filter(Thing, "name eq 'a;b,c)(' or name eq 'ünï'", expect![[r#"(or (eq name "a;b,c)(") (eq name "ünï"))"#]]);
}

#[test]
fn unterminated_string_points_at_its_quote() {
    check_filter(Thing, "name eq 'abc", expect!["Syntax: $filter: unterminated string: a `'` is missing at column 9"]);
}

#[test]
fn date_time_literals_take_fractions_and_offsets() {
    check_filter(
        Observation,
        "resultTime gt 2024-01-01T00:00:00Z and resultTime lt 2024-01-01T12:00:00.250+02:00",
        expect!["(and (gt resultTime #2024-01-01T00:00:00Z) (lt resultTime #2024-01-01T10:00:00.25Z))"],
    );
    check_filter(
        Observation,
        "resultTime gt 2024-13-01T00:00:00Z",
        expect![
            "Syntax: $filter: `2024-13-01T00:00:00Z` is not an ISO 8601 date-time with a time zone, e.g. 2024-05-01T12:00:00Z at column 15"
        ],
    );
}

#[test]
fn interval_literals_bind_to_intervals() {
    check_filter(
        Observation,
        "phenomenonTime eq 2024-01-01T00:00:00Z/2024-02-01T00:00:00Z",
        expect!["(eq phenomenonTime #2024-01-01T00:00:00Z/2024-02-01T00:00:00Z)"],
    );
    check_filter(
        Observation,
        "phenomenonTime eq 2024-02-01T00:00:00Z/2024-01-01T00:00:00Z",
        expect![
            "Syntax: $filter: the interval `2024-02-01T00:00:00Z/2024-01-01T00:00:00Z` ends before it starts at column 19"
        ],
    );
}

#[test]
fn date_and_time_literals_bind_to_their_text() {
    check_filter(
        Observation,
        "date(resultTime) eq 2024-01-01 and time(resultTime) lt 12:30:00",
        expect![[r#"(and (eq Date(resultTime) "2024-01-01") (lt Time(resultTime) "12:30:00"))"#]],
    );
}

#[test]
fn duration_literals_are_microseconds() {
    check_filter(
        Observation,
        "resultTime add duration'P1DT2H3M4.5S' gt now()",
        expect!["(gt (add resultTime duration(93784500000us)) Now())"],
    );
    check_filter(
        Observation,
        "resultTime sub duration'-PT1S' gt now()",
        expect!["(gt (sub resultTime duration(-1000000us)) Now())"],
    );
    check_filter(
        Observation,
        "resultTime add duration'P1W' gt now()",
        expect!["(gt (add resultTime duration(604800000000us)) Now())"],
    );
}

#[test]
fn durations_with_years_or_months_are_unsupported() {
    check_filter(
        Observation,
        "resultTime add duration'P1Y' gt now()",
        expect!["Unsupported: $filter: `P1Y` uses years or months, which have no fixed length; use days at column 16"],
    );
    check_filter(
        Observation,
        "resultTime add duration'P2M' gt now()",
        expect!["Unsupported: $filter: `P2M` uses years or months, which have no fixed length; use days at column 16"],
    );
}

#[test]
fn malformed_durations_are_syntax_errors() {
    check_filter(
        Observation,
        "resultTime add duration'1D' gt now()",
        expect!["Syntax: $filter: `1D` is not an ISO 8601 duration such as P1DT2H30M at column 16"],
    );
    check_filter(
        Observation,
        "resultTime add duration'PT' gt now()",
        expect!["Syntax: $filter: `PT` is not an ISO 8601 duration such as P1DT2H30M at column 16"],
    );
    check_filter(
        Observation,
        "resultTime add duration'P1H' gt now()",
        expect!["Syntax: $filter: `P1H` is not an ISO 8601 duration such as P1DT2H30M at column 16"],
    );
}

#[test]
fn geometry_literals_are_parsed_from_wkt() {
    check_filter(
        Location,
        "st_within(location, geography'POLYGON((0 0, 0 1, 1 1, 0 0))')",
        expect![[
            r#"StWithin(location, geometry({"type":"Polygon","coordinates":[[[0.0,0.0],[0.0,1.0],[1.0,1.0],[0.0,0.0]]]}))"#
        ]],
    );
    check_filter(
        Location,
        "st_equals(location, geometry'SRID=4326;POINT(1 2)')",
        expect![[r#"StEquals(location, geometry({"type":"Point","coordinates":[1.0,2.0]}))"#]],
    );
}

#[test]
fn bad_wkt_is_a_syntax_error_at_the_literal() {
    check_filter(
        Location,
        "st_equals(location, geography'POINT(1')",
        expect![
            "Syntax: $filter: bad geography literal: not a WKT geometry: Missing closing parenthesis for type at column 21"
        ],
    );
    check_filter(
        Location,
        "st_equals(location, shape'POINT(1 2)')",
        expect!["Syntax: $filter: unknown literal type `shape`; expected duration, geography or geometry at column 21"],
    );
}

#[test]
fn unexpected_characters_are_syntax_errors() {
    check_filter(Thing, "id < 5", expect!["Syntax: $filter: unexpected character `<` at column 4"]);
}

// ---------------------------------------------------------------------------------------------
// $filter: member paths

#[test]
fn member_paths_follow_navigation_hops() {
    check_filter(
        Datastream,
        "Thing/Locations/name eq 'x' and Sensor/metadata eq 'm'",
        expect![[r#"(and (eq Thing/Locations/name "x") (eq Sensor/metadata "m"))"#]],
    );
    check_filter(
        Observation,
        "Datastream/Thing/name eq 'x' and Datastream/id eq 1",
        expect![[r#"(and (eq Datastream/Thing/name "x") (eq Datastream/id 1))"#]],
    );
    check_filter(Thing, "Datastreams/Observations/result gt 5", expect!["(gt Datastreams/Observations/result 5)"]);
}

#[test]
fn id_is_also_written_iot_id() {
    check_filter(Thing, "@iot.id eq 1 or Datastreams/@iot.id eq 2", expect!["(or (eq id 1) (eq Datastreams/id 2))"]);
}

#[test]
fn json_properties_take_sub_paths() {
    check_filter(
        Thing,
        "properties/owner/name eq 'x' and Datastreams/unitOfMeasurement/symbol eq 'm'",
        expect![[r#"(and (eq properties["owner", "name"] "x") (eq Datastreams/unitOfMeasurement["symbol"] "m"))"#]],
    );
    check_filter(
        Observation,
        "result/0 gt 1 and parameters/a eq 'b'",
        expect![[r#"(and (gt result["0"] 1) (eq parameters["a"] "b"))"#]],
    );
}

#[test]
fn a_path_ending_on_a_navigation_is_not_a_value() {
    check_filter(
        Observation,
        "Datastream eq 1",
        expect!["Type: $filter: `Datastream` is an entity, not a value at column 1"],
    );
}

#[test]
fn unknown_path_segments_are_reported_where_they_are() {
    check_filter(Thing, "nmae eq 'x'", expect!["UnknownName: $filter: unknown property `nmae` of Thing at column 1"]);
    check_filter(
        Observation,
        "Datastream/Thingy/name eq 'x'",
        expect!["UnknownName: $filter: unknown property `Thingy` of Datastream at column 12"],
    );
    check_filter(Thing, "name/first eq 'x'", expect!["UnknownName: $filter: `name` has no member `first` at column 6"]);
    check_filter(Thing, "id/x eq 1", expect!["UnknownName: $filter: `id` has no member `x` at column 4"]);
    check_filter(Thing, "name/ eq 'x'", expect!["Syntax: $filter: expected a property name after `/` at column 7"]);
}

#[test]
fn lambda_operators_are_unsupported() {
    check_filter(
        Thing,
        "Datastreams/any(d:d/name eq 'x')",
        expect!["Unsupported: $filter: the lambda operator `any` is not supported at column 13"],
    );
}

// ---------------------------------------------------------------------------------------------
// $filter: types

#[test]
fn comparisons_need_compatible_operands() {
    check_filter(Thing, "name eq 1", expect!["Type: $filter: cannot compare a string with a number at column 6"]);
    check_filter(
        Observation,
        "resultTime gt 'yesterday'",
        expect!["Type: $filter: cannot compare a date-time with a string at column 12"],
    );
    check_filter(
        Observation,
        "resultTime gt phenomenonTime and validTime lt 2024-01-01T00:00:00Z",
        expect!["(and (gt resultTime phenomenonTime) (lt validTime #2024-01-01T00:00:00Z))"],
    );
}

#[test]
fn json_values_compare_with_anything_but_geometries() {
    check_filter(
        Observation,
        "result eq 'a' or result gt 1 or result eq true or result lt now()",
        expect![[r#"(or (or (eq result "a") (gt result 1)) (or (eq result true) (lt result Now())))"#]],
    );
    check_filter(
        Location,
        "properties/area eq location",
        expect!["Type: $filter: geometries cannot be compared with `eq`; use st_equals at column 17"],
    );
}

#[test]
fn null_compares_only_with_eq_and_ne() {
    check_filter(Location, "name eq null and location ne null", expect!["(and (eq name null) (ne location null))"]);
    check_filter(
        Thing,
        "name gt null",
        expect!["Type: $filter: null can only be compared with `eq` or `ne`, not `gt` at column 6"],
    );
}

#[test]
fn geometries_are_compared_with_functions_not_operators() {
    check_filter(
        Location,
        "location eq geography'POINT(1 2)'",
        expect!["Type: $filter: geometries cannot be compared with `eq`; use st_equals at column 10"],
    );
    check_filter(
        Location,
        "location lt geography'POINT(1 2)'",
        expect!["Type: $filter: geometries cannot be compared with `lt` at column 10"],
    );
}

#[test]
fn logical_operators_need_booleans() {
    check_filter(
        Thing,
        "name eq 'a' and name",
        expect!["Type: $filter: `and` needs boolean operands, not a string at column 17"],
    );
    check_filter(Thing, "not name", expect!["Type: $filter: `not` needs a boolean operand, not a string at column 5"]);
    check_filter(
        Thing,
        "not name eq 'a'",
        expect!["Type: $filter: `not` needs a boolean operand, not a string at column 5"],
    );
    check_filter(
        Thing,
        "properties/on and properties/ready",
        expect![[r#"(and properties["on"] properties["ready"])"#]],
    );
}

#[test]
fn arithmetic_needs_numbers_or_times() {
    check_filter(
        Thing,
        "name add 1 eq 2",
        expect!["Type: $filter: `add` cannot combine a string and a number at column 6"],
    );
    check_filter(
        Thing,
        "-name eq 1",
        expect!["Type: $filter: `-` needs a number or a duration, not a string at column 2"],
    );
    check_filter(
        Observation,
        "resultTime sub resultTime gt duration'PT1H'",
        expect!["(gt (sub resultTime resultTime) duration(3600000000us))"],
    );
    check_filter(
        Observation,
        "resultTime add resultTime gt now()",
        expect!["Type: $filter: `add` cannot combine a date-time and a date-time at column 12"],
    );
    check_filter(Observation, "result mul 2 gt 10", expect!["(gt (mul result 2) 10)"]);
}

#[test]
fn the_filter_must_be_boolean() {
    check_filter(
        Thing,
        "name",
        expect!["Type: $filter: the filter must be a boolean expression, not a string at column 1"],
    );
    check_filter(
        Thing,
        "id add 1",
        expect!["Type: $filter: the filter must be a boolean expression, not a number at column 1"],
    );
    check_filter(Observation, "result", expect!["result"]);
}

// ---------------------------------------------------------------------------------------------
// $filter: functions

#[test]
fn string_functions() {
    check_filter(
        Thing,
        "substringof('a', name) and contains(name, 'b') and endswith(name, 'c') and startswith(name, 'd')",
        expect![[
            r#"(and (and SubstringOf("a", name) Contains(name, "b")) (and EndsWith(name, "c") StartsWith(name, "d")))"#
        ]],
    );
    check_filter(
        Thing,
        "length(name) eq 3 and indexof(name, 'x') eq 1 and substring(name, 1) eq 'a' and substring(name, 1, 2) eq 'b'",
        expect![[
            r#"(and (and (eq Length(name) 3) (eq IndexOf(name, "x") 1)) (and (eq Substring(name, 1) "a") (eq Substring(name, 1, 2) "b")))"#
        ]],
    );
    check_filter(
        Thing,
        "tolower(name) eq 'a' and toupper(name) eq 'A' and trim(name) eq 'a' and concat(name, 'x') eq 'ax'",
        expect![[
            r#"(and (and (eq ToLower(name) "a") (eq ToUpper(name) "A")) (and (eq Trim(name) "a") (eq Concat(name, "x") "ax")))"#
        ]],
    );
}

#[test]
fn date_time_functions() {
    check_filter(
        Observation,
        "year(resultTime) eq 2024 and month(phenomenonTime) eq 1 and day(resultTime) eq 1 and hour(resultTime) eq 0",
        expect![
            "(and (and (eq Year(resultTime) 2024) (eq Month(phenomenonTime) 1)) (and (eq Day(resultTime) 1) (eq Hour(resultTime) 0)))"
        ],
    );
    check_filter(
        Observation,
        "minute(resultTime) eq 0 and second(resultTime) eq 0 and fractionalseconds(resultTime) eq 0 and totaloffsetminutes(resultTime) eq 0",
        expect![
            "(and (and (eq Minute(resultTime) 0) (eq Second(resultTime) 0)) (and (eq FractionalSeconds(resultTime) 0) (eq TotalOffsetMinutes(resultTime) 0)))"
        ],
    );
    check_filter(
        Observation,
        "resultTime lt now() and resultTime gt mindatetime() and resultTime lt maxdatetime()",
        expect!["(and (and (lt resultTime Now()) (gt resultTime MinDateTime())) (lt resultTime MaxDateTime()))"],
    );
}

#[test]
fn math_functions() {
    check_filter(
        Observation,
        "round(result) eq 1 and floor(result) eq 1 and ceiling(result div 2) eq 1",
        expect!["(and (and (eq Round(result) 1) (eq Floor(result) 1)) (eq Ceiling((div result 2)) 1))"],
    );
}

#[test]
fn geospatial_functions() {
    check_filter(
        Location,
        "geo.distance(location, geography'POINT(0 0)') lt 1 and geo.length(location) gt 0 and geo.intersects(location, geography'POINT(0 0)')",
        expect![[
            r#"(and (and (lt GeoDistance(location, geometry({"type":"Point","coordinates":[0.0,0.0]})) 1) (gt GeoLength(location) 0)) GeoIntersects(location, geometry({"type":"Point","coordinates":[0.0,0.0]})))"#
        ]],
    );
    check_filter(
        Location,
        "st_equals(location, location) or st_disjoint(location, location) or st_touches(location, location) or st_within(location, location)",
        expect![
            "(or (or StEquals(location, location) StDisjoint(location, location)) (or StTouches(location, location) StWithin(location, location)))"
        ],
    );
    check_filter(
        Location,
        "st_overlaps(location, location) or st_crosses(location, location) or st_intersects(location, location) or st_contains(location, location) or st_relate(location, location, 'T********')",
        expect![[
            r#"(or (or (or StOverlaps(location, location) StCrosses(location, location)) (or StIntersects(location, location) StContains(location, location))) StRelate(location, location, "T********"))"#
        ]],
    );
}

#[test]
fn function_arity_is_checked_at_the_function_name() {
    check_filter(
        Thing,
        "length(name, name) eq 1",
        expect!["Type: $filter: `length` takes 1 argument, not 2 at column 1"],
    );
    check_filter(
        Thing,
        "substring(name) eq 'a'",
        expect!["Type: $filter: `substring` takes 2 or 3 arguments, not 1 at column 1"],
    );
    check_filter(
        Thing,
        "name eq 'a' and now(name) lt now()",
        expect!["Type: $filter: `now` takes no arguments, not 1 at column 17"],
    );
    check_filter(Thing, "contains(name) ", expect!["Type: $filter: `contains` takes 2 arguments, not 1 at column 1"]);
}

#[test]
fn function_argument_types_are_checked_at_the_function_name() {
    check_filter(
        Thing,
        "length(1) eq 1",
        expect!["Type: $filter: argument 1 of `length` must be a string, not a number at column 1"],
    );
    check_filter(
        Thing,
        "substring(name, 'a') eq 'a'",
        expect!["Type: $filter: argument 2 of `substring` must be a number, not a string at column 1"],
    );
    check_filter(
        Location,
        "year(location) eq 1",
        expect!["Type: $filter: argument 1 of `year` must be a date-time, not a geometry at column 1"],
    );
    check_filter(
        Location,
        "st_within(name, location)",
        expect!["Type: $filter: argument 1 of `st_within` must be a geometry, not a string at column 1"],
    );
    check_filter(
        Thing,
        "round(name) eq 1",
        expect!["Type: $filter: argument 1 of `round` must be a number, not a string at column 1"],
    );
}

#[test]
fn json_arguments_are_accepted_everywhere() {
    check_filter(
        Thing,
        "contains(properties/tag, 'x') and year(properties/since) eq 2024",
        expect![[r#"(and Contains(properties["tag"], "x") (eq Year(properties["since"]) 2024))"#]],
    );
}

#[test]
fn unknown_and_miscased_functions_are_unknown_names() {
    check_filter(Thing, "frobnicate(name)", expect!["UnknownName: $filter: unknown function `frobnicate` at column 1"]);
    check_filter(
        Thing,
        "Contains(name, 'a')",
        expect!["UnknownName: $filter: unknown function `Contains` at column 1"],
    );
}

#[test]
fn function_calls_need_closing_parentheses() {
    check_filter(
        Thing,
        "contains(name, 'a'",
        expect!["Syntax: $filter: expected `,`, `)` or an operator after `'a'` at column 19"],
    );
    check_filter(
        Thing,
        "contains(name 'a')",
        expect!["Syntax: $filter: expected `,`, `)` or an operator after `name` at column 15"],
    );
}

// ---------------------------------------------------------------------------------------------
// $select, $orderby, $top, $skip, $count, $resultFormat

#[test]
fn select_resolves_ids_properties_and_navigations() {
    check_query(
        Thing,
        "$select=id,name,Datastreams,@iot.id,name",
        expect![[r#"
        select: id, name, Datastreams(nav)
    "#]],
    );
}

#[test]
fn select_reports_unknown_names() {
    check_query(
        Thing,
        "$select=id,nmae",
        expect!["UnknownName: $select: unknown property `nmae` of Thing at column 4"],
    );
    check_query(Thing, "$select=id,", expect!["Syntax: $select: expected a property name after `,` at column 4"]);
    check_query(Thing, "$select=id name", expect!["Syntax: $select: expected `,` after `id` at column 4"]);
}

#[test]
fn orderby_takes_expressions_and_directions() {
    check_query(
        Observation,
        "$orderby=phenomenonTime+desc,id,result/0+asc,Datastream/name",
        expect![[r#"
        orderby: phenomenonTime desc
        orderby: id asc
        orderby: result["0"] asc
        orderby: Datastream/name asc
    "#]],
    );
}

#[test]
fn orderby_rejects_conditions_and_bad_directions() {
    check_query(
        Thing,
        "$orderby=name+eq+'a'",
        expect!["Type: $orderby: cannot order by a boolean expression at column 1"],
    );
    check_query(
        Thing,
        "$orderby=name+down",
        expect!["Syntax: $orderby: expected `asc`, `desc`, `,` or an operator after `name` at column 6"],
    );
}

#[test]
fn top_skip_count_and_result_format() {
    check_query(
        Observation,
        "$top=10&$skip=20&$count=true&$resultFormat=dataArray",
        expect![[r#"
        top: 10
        skip: 20
        count: true
        resultFormat: DataArray
    "#]],
    );
    check_query(
        Observation,
        "$count=false&$skip=0",
        expect![[r#"
        count: false
    "#]],
    );
}

#[test]
fn top_and_skip_must_be_non_negative_integers() {
    check_query(Thing, "$top=-1", expect!["Syntax: $top: expected a non-negative integer, found `-1` at column 1"]);
    check_query(Thing, "$top=1.5", expect!["Syntax: $top: expected a non-negative integer, found `1.5` at column 1"]);
    check_query(Thing, "$skip=ten", expect!["Syntax: $skip: expected a non-negative integer, found `ten` at column 1"]);
    check_query(Thing, "$skip=", expect!["Syntax: $skip: expected a non-negative integer, found the end at column 1"]);
    check_query(
        Thing,
        "$top=99999999999999999999",
        expect!["Syntax: $top: expected a non-negative integer, found `99999999999999999999` at column 1"],
    );
    check_query(Thing, "$top=5+6", expect!["Syntax: $top: expected nothing after `5` at column 3"]);
}

#[test]
fn count_must_be_true_or_false() {
    check_query(Thing, "$count=yes", expect!["Syntax: $count: expected `true` or `false`, found `yes` at column 1"]);
}

#[test]
fn only_the_data_array_result_format_is_supported() {
    check_query(
        Thing,
        "$resultFormat=csv",
        expect![
            "Unsupported: $resultFormat: the result format `csv` is not supported; only `dataArray` is at column 1"
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// $expand

#[test]
fn expand_with_nested_options() {
    check_query(
        Thing,
        "$expand=Datastreams($filter=name+eq+'a';$select=id,name;$expand=Observations($top=1;$orderby=phenomenonTime+desc);$top=2;$skip=1;$count=true;$orderby=name),Locations",
        expect![[r#"
            expand Datastreams -> Datastream
              filter: (eq name "a")
              select: id, name
              orderby: name asc
              top: 2
              skip: 1
              count: true
              expand Observations -> Observation
                orderby: phenomenonTime desc
                top: 1
            expand Locations -> Location
        "#]],
    );
}

#[test]
fn expand_paths_nest_expansions() {
    check_query(
        Thing,
        "$expand=Datastreams/Observations($top=1)",
        expect![[r#"
        expand Datastreams -> Datastream
          expand Observations -> Observation
            top: 1
    "#]],
    );
}

#[test]
fn expands_of_the_same_navigation_are_merged() {
    check_query(
        Thing,
        "$expand=Datastreams,Datastreams/Sensor,Datastreams($top=3;$expand=ObservedProperty)",
        expect![[r#"
            expand Datastreams -> Datastream
              top: 3
              expand Sensor -> Sensor
              expand ObservedProperty -> ObservedProperty
        "#]],
    );
    check_query(
        Thing,
        "$expand=Datastreams($top=1),Datastreams($top=1;$select=name)",
        expect![[r#"
        expand Datastreams -> Datastream
          select: name
          top: 1
    "#]],
    );
}

#[test]
fn conflicting_expands_of_the_same_navigation_are_an_error() {
    check_query(
        Thing,
        "$expand=Datastreams($top=1),Datastreams($top=2)",
        expect!["Syntax: $expand: `Datastreams` is expanded twice with different `$top` at column 21"],
    );
}

#[test]
fn separators_inside_strings_and_parentheses_do_not_split_expand_options() {
    check_query(
        Thing,
        "$expand=Datastreams($filter=(name+eq+'a;b,c)'+or+contains(name,'('));$top=1),Locations",
        expect![[r#"
            expand Datastreams -> Datastream
              filter: (or (eq name "a;b,c)") Contains(name, "("))
              top: 1
            expand Locations -> Location
        "#]],
    );
}

#[test]
fn expand_options_bind_against_the_navigation_target() {
    check_query(
        Thing,
        "$expand=Datastreams($filter=result+gt+1)",
        expect!["UnknownName: $expand: unknown property `result` of Datastream at column 21"],
    );
    check_query(
        Thing,
        "$expand=Datastreams/Observations($filter=result+gt+1)",
        expect![[r#"
        expand Datastreams -> Datastream
          expand Observations -> Observation
            filter: (gt result 1)
    "#]],
    );
}

#[test]
fn expand_reports_unknown_navigations_and_options() {
    check_query(
        Thing,
        "$expand=Datastreams/Sensors",
        expect!["UnknownName: $expand: unknown navigation property `Sensors` of Datastream at column 13"],
    );
    check_query(
        Thing,
        "$expand=name",
        expect!["UnknownName: $expand: unknown navigation property `name` of Thing at column 1"],
    );
    check_query(
        Thing,
        "$expand=Datastreams($frobnicate=1)",
        expect!["Unsupported: $expand: the query option `$frobnicate` is not supported inside `$expand` at column 13"],
    );
    check_query(
        Thing,
        "$expand=Datastreams($resultFormat=dataArray)",
        expect![
            "Unsupported: $expand: the query option `$resultFormat` is not supported inside `$expand` at column 13"
        ],
    );
    check_query(
        Thing,
        "$expand=Datastreams($top=1;$top=2)",
        expect!["Syntax: $expand: `$top` is given more than once at column 20"],
    );
    check_query(
        Thing,
        "$expand=Datastreams($top=1",
        expect!["Syntax: $expand: expected `;` or `)` after `1` at column 19"],
    );
    check_query(
        Thing,
        "$expand=Datastreams(top=1)",
        expect!["Syntax: $expand: expected a query option such as `$filter` after `(` at column 13"],
    );
    check_query(
        Thing,
        "$expand=Datastreams($filter=name+'x')",
        expect!["Syntax: $expand: expected an operator after `name` at column 26"],
    );
}

#[test]
fn expand_depth_is_limited() {
    let nine = "Datastreams/Thing/Datastreams/Thing/Datastreams/Thing/Datastreams/Thing/Datastreams";
    check_query(
        Thing,
        &format!("$expand={nine}"),
        expect!["Limit: $expand: `$expand` is nested more than 8 levels deep at column 73"],
    );
    let nested = "Datastreams($expand=Thing($expand=Datastreams($expand=Thing($expand=Datastreams($expand=Thing($expand=Datastreams($expand=Thing($expand=Datastreams))))))))";
    check_query(
        Thing,
        &format!("$expand={nested}"),
        expect!["Limit: $expand: `$expand` is nested more than 8 levels deep at column 137"],
    );
    let eight = "Datastreams/Thing/Datastreams/Thing/Datastreams/Thing/Datastreams/Thing";
    assert!(parse_query(&format!("$expand={eight}"), Thing, &Limits::default()).is_ok());
}

// ---------------------------------------------------------------------------------------------
// The query string as a whole

#[test]
fn plus_decodes_to_a_space_and_percent_escapes_are_decoded() {
    check_query(
        Thing,
        "$filter=name+eq+%27a+b%2Bc%27",
        expect![[r#"
        filter: (eq name "a b+c")
    "#]],
    );
    check_query(
        Thing,
        "%24top=1",
        expect![[r#"
        top: 1
    "#]],
    );
}

#[test]
fn split_query_keeps_order_and_skips_empty_pieces() {
    let pairs = split_query("b=2&&a=1&flag&$top=3%264").unwrap_or_default();
    expect![[r#"
        [
            (
                "b",
                "2",
            ),
            (
                "a",
                "1",
            ),
            (
                "flag",
                "",
            ),
            (
                "$top",
                "3&4",
            ),
        ]
    "#]]
    .assert_debug_eq(&pairs);
}

#[test]
fn malformed_percent_escapes_are_syntax_errors() {
    check_query(
        Thing,
        "$top=1&$filter=name%2",
        expect!["Syntax: `%` must be followed by two hexadecimal digits at column 20"],
    );
    check_query(Thing, "$filter=%FF", expect!["Syntax: the percent-encoded bytes are not valid UTF-8 at column 9"]);
}

#[test]
fn parameters_without_a_dollar_are_ignored() {
    check_query(
        Thing,
        "foo=bar&$top=1&name=x",
        expect![[r#"
        top: 1
    "#]],
    );
}

#[test]
fn unknown_system_options_are_unsupported() {
    check_query(
        Thing,
        "$top=1&$search=x",
        expect!["Unsupported: $search: the query option `$search` is not supported"],
    );
    check_query(Thing, "$Filter=id+eq+1", expect!["Unsupported: $Filter: the query option `$Filter` is not supported"]);
}

#[test]
fn repeated_options_are_syntax_errors() {
    check_query(Thing, "$top=1&$top=1", expect!["Syntax: $top: `$top` is given more than once"]);
}

#[test]
fn over_long_queries_hit_the_length_limit() {
    let raw = format!("$filter=name+eq+'{}'", "x".repeat(70_000));
    let error = parse_query(&raw, Thing, &Limits::default()).err();
    expect!["Limit: the query is 70018 characters long; at most 65536 are allowed"]
        .assert_eq(&error.as_ref().map(render_error).unwrap_or_default());
}

// ---------------------------------------------------------------------------------------------
// Writing queries back (every `check_filter` and `check_query` above also round-trips)

/// A raw query string on `entity`, written back as decoded option pairs.
fn check_written(entity: EntityType, raw: &str, expect: Expect) {
    let query = parse_query(raw, entity, &Limits::default()).expect("the query binds");
    assert_round_trip(&query, entity);
    let written: Vec<String> =
        query_options(&query).into_iter().map(|(name, value)| format!("{name}={value}")).collect();
    expect.assert_eq(&written.join("\n"));
}

#[test]
fn written_queries_keep_options_and_leave_paging_to_the_caller() {
    check_written(
        Thing,
        "$top=2&$skip=4&$count=true&$filter=name+eq+'x'&$orderby=name,id+desc&$select=id,name,Datastreams\
         &$expand=Datastreams($filter=name+eq+'x';$orderby=name;$top=2;$skip=1;$count=false;$select=name;\
         $expand=Observations($top=1)),Locations",
        expect![[r#"
            $filter=name eq 'x'
            $select=id,name,Datastreams
            $expand=Datastreams($filter=name eq 'x';$select=name;$expand=Observations($top=1);$orderby=name;$top=2;$skip=1;$count=false),Locations
            $orderby=name,id desc
            $count=true"#]],
    );
    check_written(Observation, "$resultFormat=dataArray&$top=5", expect!["$resultFormat=dataArray"]);
    check_written(Thing, "$expand=Datastreams/Observations", expect!["$expand=Datastreams($expand=Observations)"]);
}

#[test]
fn written_expressions_are_parenthesised_by_precedence() {
    check_written(
        Thing,
        "$filter=(id add 2) mul 3 eq 9 and not (name eq 'a') and - (id sub 1) lt - 5 and -5 lt id",
        expect!["$filter=((id add 2) mul 3 eq 9 and not (name eq 'a')) and (- (id sub 1) lt - 5 and -5 lt id)"],
    );
    check_written(
        Thing,
        "$filter=id eq 1 or id eq 2 or id eq 3 or id eq 4 or id eq 5",
        expect!["$filter=((id eq 1 or id eq 2) or (id eq 3 or id eq 4)) or id eq 5"],
    );
    check_written(
        Thing,
        "$filter=id eq 1 or (id eq 2 or id eq 3) and id sub 1 sub (2 sub 3) eq 0",
        expect!["$filter=id eq 1 or (id eq 2 or id eq 3) and id sub 1 sub (2 sub 3) eq 0"],
    );
}

#[test]
fn written_literals_read_back_as_the_same_values() {
    check_written(
        Observation,
        "$filter=result eq 'it''s a;b%26c' or result eq 1.0 or result eq -2.5e-300 or result eq 9223372036854775808 \
         or result eq -9223372036854775808 or result eq 12:30:00 or result eq 2024-01-01",
        expect![
            "$filter=((result eq 'it''s a;b&c' or result eq 1.0) or (result eq -2.5e-300 or result eq 9.223372036854776e18)) or ((result eq -9223372036854775808 or result eq '12:30:00') or result eq '2024-01-01')"
        ],
    );
    check_written(
        Observation,
        "$filter=resultTime gt 2024-01-01T12:00:00.250%2B02:00 and phenomenonTime eq 2024-01-01T00:00:00Z/P1D",
        expect![
            "$filter=resultTime gt 2024-01-01T10:00:00.25Z and phenomenonTime eq 2024-01-01T00:00:00Z/2024-01-02T00:00:00Z"
        ],
    );
    check_written(
        Observation,
        "$filter=resultTime add duration'P1W' gt now() and resultTime sub duration'-PT0.000001S' gt now() \
         and resultTime add duration'PT90061.5S' gt now() and resultTime add duration'PT0S' gt now()",
        expect![
            "$filter=(resultTime add duration'P7D' gt now() and resultTime sub duration'-PT0.000001S' gt now()) and (resultTime add duration'P1DT1H1M1.5S' gt now() and resultTime add duration'PT0S' gt now())"
        ],
    );
    check_written(
        Location,
        "$filter=st_within(location, geometry'SRID=4326;POLYGON((0 0, 0 1.5, 1 1, 0 0))') \
         or geo.distance(location, geography'POINT(-1e-3 2)') lt 1",
        expect![
            "$filter=st_within(location, geography'POLYGON((0 0,0 1.5,1 1,0 0))') or geo.distance(location, geography'POINT(-0.001 2)') lt 1"
        ],
    );
}

#[test]
fn written_members_keep_hops_and_json_paths() {
    check_written(
        Observation,
        "$filter=Datastream/Thing/properties/owner/0 eq 'x' and Datastream/@iot.id eq 1&$orderby=result/a/1 desc",
        expect![[r#"
            $filter=Datastream/Thing/properties/owner/0 eq 'x' and Datastream/id eq 1
            $orderby=result/a/1 desc"#]],
    );
}

#[test]
fn parenthesised_chains_stay_one_operand() {
    check_filter(
        Thing,
        "(id eq 1 or id eq 2 or id eq 3) or id eq 4 or id eq 5",
        expect!["(or (or (or (or (eq id 1) (eq id 2)) (eq id 3)) (eq id 4)) (eq id 5))"],
    );
    check_filter(Thing, "id eq 1 or (id eq 2 or id eq 3)", expect!["(or (eq id 1) (or (eq id 2) (eq id 3)))"]);
}

/// Random well-typed `$filter` text on Observations, from `depth` levels of nesting down.
fn random_condition(rng: &mut Rng, depth: usize) -> String {
    if depth == 0 || rng.below(3) == 0 {
        return match rng.below(9) {
            0 => format!("{} {} {}", random_number(rng, depth), random_comparison(rng), random_number(rng, depth)),
            1 => format!("{} eq {}", random_text(rng), random_text(rng)),
            2 => format!("contains({}, {})", random_text(rng), random_text(rng)),
            3 => format!("resultTime {} {}", random_comparison(rng), random_instant(rng)),
            4 => format!("phenomenonTime eq {}/{}", random_instant(rng), "2099-01-01T00:00:00Z"),
            5 => format!("resultTime add {} gt now()", random_duration(rng)),
            6 => format!("st_intersects(FeatureOfInterest/feature, {})", random_geometry(rng)),
            7 => "result eq null".to_owned(),
            _ => ["true", "false", "parameters/on", "Datastream/Thing/properties/a/0"][rng.below(4)].to_owned(),
        };
    }
    match rng.below(5) {
        0 => format!("not ({})", random_condition(rng, depth - 1)),
        1 => format!("({})", random_condition(rng, depth - 1)),
        _ => {
            let op = if rng.below(2) == 0 { " and " } else { " or " };
            let operands: Vec<String> = (0..2 + rng.below(4)).map(|_| random_condition(rng, depth - 1)).collect();
            operands.join(op)
        }
    }
}

fn random_number(rng: &mut Rng, depth: usize) -> String {
    if depth == 0 || rng.below(2) == 0 {
        return match rng.below(8) {
            0 => "id".to_owned(),
            1 => "result".to_owned(),
            2 => "Datastream/Thing/id".to_owned(),
            3 => format!("{}", rng.next() as i64 >> rng.below(64)),
            4 => {
                let value = f64::from_bits(rng.next());
                if value.is_finite() { format!("{value:?}") } else { "0.5".to_owned() }
            }
            5 => format!("{}.{}", rng.below(1000), rng.below(1000)),
            6 => "length(Datastream/name)".to_owned(),
            _ => "year(resultTime)".to_owned(),
        };
    }
    let operator = ["add", "sub", "mul", "div", "mod"][rng.below(5)];
    match rng.below(4) {
        0 => format!("- {}", random_number(rng, depth - 1)),
        1 => format!("({} {operator} {})", random_number(rng, depth - 1), random_number(rng, depth - 1)),
        _ => format!("{} {operator} {}", random_number(rng, depth - 1), random_number(rng, depth - 1)),
    }
}

fn random_comparison(rng: &mut Rng) -> &'static str {
    ["eq", "ne", "gt", "ge", "lt", "le"][rng.below(6)]
}

fn random_text(rng: &mut Rng) -> String {
    const CHARS: &[char] = &['a', 'Z', '\'', ' ', '&', ';', '%', '+', '(', ')', ',', '=', '#', '/', '"', 'é', '👍'];
    match rng.below(4) {
        0 => "Datastream/name".to_owned(),
        1 => "tolower(Datastream/Thing/name)".to_owned(),
        _ => {
            let text: String = (0..rng.below(8)).map(|_| CHARS[rng.below(CHARS.len())]).collect();
            format!("'{}'", text.replace('\'', "''"))
        }
    }
}

fn random_instant(rng: &mut Rng) -> String {
    let fraction = if rng.below(2) == 0 { format!(".{}", rng.below(1_000_000)) } else { String::new() };
    let offset = ["Z", "+02:00", "-11:30"][rng.below(3)];
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{fraction}{offset}",
        1 + rng.below(2098),
        1 + rng.below(12),
        1 + rng.below(28),
        rng.below(24),
        rng.below(60),
        rng.below(60)
    )
}

fn random_duration(rng: &mut Rng) -> String {
    let sign = if rng.below(2) == 0 { "-" } else { "" };
    match rng.below(3) {
        0 => format!("duration'{sign}PT{}.{:06}S'", rng.next() >> (21 + rng.below(40)), rng.below(1_000_000)),
        1 => format!(
            "duration'{sign}P{}W{}DT{}H{}M{}S'",
            rng.below(1000),
            rng.below(100_000_000),
            rng.below(50),
            rng.below(100),
            rng.below(100)
        ),
        _ => format!("duration'{sign}P{}DT{}.{}S'", rng.below(1000), rng.below(100_000), rng.below(1000)),
    }
}

fn random_geometry(rng: &mut Rng) -> String {
    let mut point = |rng: &mut Rng| {
        let coordinate = |rng: &mut Rng| (rng.next() as i64 >> rng.below(64)) as f64 / 10f64.powi(rng.below(12) as i32);
        format!("{} {}", coordinate(rng), coordinate(rng))
    };
    let ring = |rng: &mut Rng, point: &mut dyn FnMut(&mut Rng) -> String| {
        let (a, b, c) = (point(rng), point(rng), point(rng));
        format!("({a}, {b}, {c}, {a})")
    };
    let wkt = match rng.below(7) {
        0 => format!("POINT({})", point(rng)),
        1 => format!("LINESTRING({}, {})", point(rng), point(rng)),
        2 => format!("POLYGON({}, {})", ring(rng, &mut point), ring(rng, &mut point)),
        3 => format!("MULTIPOINT(({}), ({}))", point(rng), point(rng)),
        4 => format!("MULTILINESTRING(({}, {}), ({}, {}))", point(rng), point(rng), point(rng), point(rng)),
        5 => format!("MULTIPOLYGON(({}), ({}))", ring(rng, &mut point), ring(rng, &mut point)),
        _ => format!("GEOMETRYCOLLECTION(POINT({}), LINESTRING({}, {}))", point(rng), point(rng), point(rng)),
    };
    let prefix = if rng.below(2) == 0 { "geography" } else { "geometry" };
    format!("{prefix}'{wkt}'")
}

#[test]
fn random_filters_round_trip() {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    for _ in 0..3000 {
        let filter = random_condition(&mut rng, 4);
        let raw = format!("$filter={}", encode(&filter));
        match parse_query(&raw, Observation, &Limits::default()) {
            Ok(query) => assert_round_trip(&query, Observation),
            Err(error) => panic!("the generated `{filter}` does not parse: {}", render_error(&error)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Resource paths

#[test]
fn paths_address_collections_and_entities() {
    check_path(
        "/Things",
        expect![[r#"
        Thing
        tail: none"#]],
    );
    check_path(
        "/Things(1)",
        expect![[r#"
        Thing(1)
        tail: none"#]],
    );
    check_path(
        "Things(1)/",
        expect![[r#"
        Thing(1)
        tail: none"#]],
    );
    check_path(
        "/ObservedProperties(9223372036854775807)",
        expect![[r#"
        ObservedProperty(9223372036854775807)
        tail: none"#]],
    );
}

#[test]
fn paths_follow_navigations() {
    check_path(
        "/Things(1)/Datastreams",
        expect![[r#"
        Thing(1)
        Datastream via Datastreams
        tail: none"#]],
    );
    check_path(
        "/Things(1)/Datastreams(2)/Observations",
        expect![[r#"
        Thing(1)
        Datastream(2) via Datastreams
        Observation via Observations
        tail: none"#]],
    );
    check_path(
        "/Datastreams(1)/Thing",
        expect![[r#"
        Datastream(1)
        Thing via Thing
        tail: none"#]],
    );
    check_path(
        "/Observations(1)/Datastream/Thing/Locations",
        expect![[r#"
        Observation(1)
        Datastream via Datastream
        Thing via Thing
        Location via Locations
        tail: none"#]],
    );
}

#[test]
fn paths_end_in_properties_values_and_refs() {
    check_path(
        "/Things(1)/name",
        expect![[r#"
        Thing(1)
        tail: property name"#]],
    );
    check_path(
        "/Things(1)/name/$value",
        expect![[r#"
        Thing(1)
        tail: value of name"#]],
    );
    check_path(
        "/Datastreams(1)/Thing/properties",
        expect![[r#"
        Datastream(1)
        Thing via Thing
        tail: property properties"#]],
    );
    check_path(
        "/Things/$ref",
        expect![[r#"
        Thing
        tail: $ref"#]],
    );
    check_path(
        "/Things(1)/Datastreams/$ref",
        expect![[r#"
        Thing(1)
        Datastream via Datastreams
        tail: $ref"#]],
    );
    check_path(
        "/Datastreams(1)/Thing/$ref",
        expect![[r#"
        Datastream(1)
        Thing via Thing
        tail: $ref"#]],
    );
}

#[test]
fn paths_are_percent_decoded() {
    check_path(
        "/Things%281%29/na%6De",
        expect![[r#"
        Thing(1)
        tail: property name"#]],
    );
    check_path("/Things%2", expect!["BadPath: `%` must be followed by two hexadecimal digits at column 8"]);
}

#[test]
fn bad_paths() {
    check_path("", expect!["BadPath: the path names no entity set at column 1"]);
    check_path("/", expect!["BadPath: the path names no entity set at column 2"]);
    check_path("/Thingz", expect!["BadPath: unknown entity set `Thingz` at column 2"]);
    check_path(
        "/Things/Datastreams",
        expect![
            "BadPath: cannot take `Datastreams` from the collection `Things`; address one entity with a key, e.g. `Things(1)` at column 9"
        ],
    );
    check_path(
        "/Things/name",
        expect![
            "BadPath: cannot take `name` from the collection `Things`; address one entity with a key, e.g. `Things(1)` at column 9"
        ],
    );
    check_path(
        "/Things(1)/Datastreams/name",
        expect![
            "BadPath: cannot take `name` from the collection `Datastreams`; address one entity with a key, e.g. `Datastreams(1)` at column 24"
        ],
    );
    check_path(
        "/Datastreams(1)/Thing(2)",
        expect!["BadPath: `Thing` is a single entity and takes no key at column 17"],
    );
    check_path(
        "/Things(1)/Sensors",
        expect!["BadPath: unknown property or navigation property `Sensors` of Thing at column 12"],
    );
    check_path("/Things(1)/name(1)", expect!["BadPath: the property `name` takes no key at column 12"]);
    check_path("/Things(1)//Datastreams", expect!["BadPath: empty path segment at column 12"]);
    check_path("/Things(1)/$value", expect!["BadPath: `$value` must follow a property at column 12"]);
    check_path("/Things(1)/name/$ref", expect!["BadPath: only `$value` may follow the property `name` at column 17"]);
    check_path("/Things(1)/name/$value/x", expect!["BadPath: nothing may follow `$value` at column 24"]);
    check_path("/Things/$ref/Datastreams", expect!["BadPath: nothing may follow `$ref` at column 14"]);
    check_path("/$ref", expect!["BadPath: unknown entity set `$ref` at column 2"]);
}

#[test]
fn bad_keys() {
    check_path("/Things('a')", expect!["BadKey: `'a'` is not an id; ids are integers at column 9"]);
    check_path("/Things(1x)", expect!["BadKey: `1x` is not an id; ids are integers at column 9"]);
    check_path(
        "/Things(",
        expect!["BadKey: the key of `Things` must be an integer in parentheses, e.g. `Things(1)` at column 8"],
    );
    check_path("/Things()", expect!["BadKey: the key of `Things` is empty at column 9"]);
    check_path("/Things(-1)", expect!["BadKey: `-1` is not an id; ids are integers at column 9"]);
    check_path(
        "/Things(1)x",
        expect!["BadKey: the key of `Things` must be an integer in parentheses, e.g. `Things(1)` at column 8"],
    );
    check_path(
        "/Things(99999999999999999999)",
        expect!["BadKey: the id `99999999999999999999` is too large at column 9"],
    );
    check_path("/Things(1)/Datastreams(a)", expect!["BadKey: `a` is not an id; ids are integers at column 24"]);
}

// ---------------------------------------------------------------------------------------------
// Robustness: limits and random input

#[test]
fn deep_parentheses_hit_the_depth_limit() {
    let limits = Limits { max_length: usize::MAX, ..Limits::default() };
    let depth = 100_000;
    let raw = format!("$filter={}true{}", "(".repeat(depth), ")".repeat(depth));
    let error = parse_query(&raw, Thing, &limits).err();
    expect!["Limit: $filter: the expression is nested more than 64 levels deep at column 66"]
        .assert_eq(&error.as_ref().map(render_error).unwrap_or_default());
}

#[test]
fn deep_prefix_operators_hit_the_depth_limit() {
    let limits = Limits { max_length: usize::MAX, ..Limits::default() };
    let raw = format!("$filter={}true", "not+".repeat(100_000));
    let error = parse_query(&raw, Thing, &limits).err();
    expect!["Limit: $filter: the expression is nested more than 64 levels deep at column 261"]
        .assert_eq(&error.as_ref().map(render_error).unwrap_or_default());
    let raw = format!("$filter={}1+eq+1", "-+".repeat(100_000));
    assert_eq!(parse_query(&raw, Thing, &limits).err().map(|e| e.kind), Some(ErrorKind::Limit));
}

#[test]
fn deep_function_calls_and_long_operator_chains_hit_the_depth_limit() {
    let limits = Limits { max_length: usize::MAX, ..Limits::default() };
    let raw = format!("$filter={}name{}+eq+'a'", "trim(".repeat(100_000), ")".repeat(100_000));
    assert_eq!(parse_query(&raw, Thing, &limits).err().map(|e| e.kind), Some(ErrorKind::Limit));
    let raw = format!("$filter=id{}+eq+1", "+add+1".repeat(100_000));
    let error = parse_query(&raw, Thing, &limits).err();
    expect!["Limit: $filter: the expression is nested more than 64 levels deep at column 382"]
        .assert_eq(&error.as_ref().map(render_error).unwrap_or_default());
    let raw = format!("$expand={}", "Datastreams($expand=Thing($expand=".repeat(50_000));
    assert_eq!(parse_query(&raw, Thing, &limits).err().map(|e| e.kind), Some(ErrorKind::Limit));
}

/// A small deterministic PRNG (xorshift64*), so the random inputs are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }
}

const FRAGMENTS: &[&str] = &[
    "$filter=",
    "$select=",
    "$expand=",
    "$orderby=",
    "$top=",
    "$skip=",
    "$count=",
    "$resultFormat=",
    "&",
    "=",
    "(",
    ")",
    ",",
    ";",
    "/",
    "'",
    "''",
    "+",
    " ",
    "-",
    ":",
    "%",
    "%2",
    "%27",
    "%FF",
    "%C3%A9",
    "eq",
    "ne",
    "and",
    "or",
    "not",
    "add",
    "sub",
    "mul",
    "div",
    "mod",
    "gt",
    "lt",
    "asc",
    "desc",
    "null",
    "true",
    "false",
    "0",
    "1",
    "-1",
    "1.5",
    "1e9",
    "1e999",
    "9999999999999999999999",
    "2024-01-01",
    "2024-01-01T00:00:00Z",
    "2024-01-01T00:00:00Z/2024-02-01T00:00:00Z",
    "2024-99-01T25:00:00Z/P1D",
    "12:30:00",
    "12:3",
    "duration'",
    "duration'P1D'",
    "duration'P1Y'",
    "duration'PT99999999999999999999H'",
    "geography'POINT(1 2)'",
    "geometry'POLYGON((0 0,1 1,",
    "geography'SRID=1;",
    "name",
    "id",
    "@iot.id",
    "result",
    "properties",
    "Datastream",
    "Datastreams",
    "Thing",
    "Observations",
    "Locations",
    "location",
    "phenomenonTime",
    "resultTime",
    "substring(",
    "st_relate(",
    "now()",
    "geo.distance(",
    "any(",
    "Things",
    "Things(1)",
    "$ref",
    "$value",
    "é",
    "\u{0}",
    "\u{FFFF}",
    "👍",
];

fn random_input(rng: &mut Rng) -> String {
    let mut text = String::new();
    for _ in 0..rng.below(24) {
        if rng.below(8) == 0 {
            // A random character, to reach what the fragments do not.
            let c = char::from_u32(u32::try_from(rng.next() % 0x250).unwrap_or(0)).unwrap_or('?');
            text.push(c);
        } else {
            text.push_str(FRAGMENTS[rng.below(FRAGMENTS.len())]);
        }
    }
    text
}

/// Also: whatever random input binds round-trips.
#[test]
fn random_input_never_panics() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let limits = Limits::default();
    for _ in 0..4000 {
        let input = random_input(&mut rng);
        for entity in EntityType::ALL {
            for raw in [input.clone(), format!("$filter={input}"), format!("$expand=Datastreams({input})")] {
                if let Ok(query) = parse_query(&raw, entity, &limits) {
                    assert_round_trip(&query, entity);
                }
            }
        }
        let _ = parse_path(&input);
        let _ = parse_path(&format!("/Things(1)/{input}"));
    }
}
