//! Unit tests of topic parsing; the extension end to end is in the integration suite.

use crate::topic;

#[test]
fn sensorthings_topics_parse_with_options_and_others_are_not_ours() {
    let parsed = topic::parse("v1.1/Datastreams(3)/Observations?$select=result,phenomenonTime").unwrap().unwrap();
    assert_eq!(app::target_entity(&parsed.path), model::EntityType::Observation);
    assert_eq!(parsed.query.select.as_ref().map(Vec::len), Some(2));
    assert!(topic::parse("v1.1/Things(1)/name").unwrap().is_ok());
    assert!(topic::parse("v1.1/Nonsense").unwrap().is_err());
    assert!(topic::parse("v1.1/Things?$filter=name%20eq").unwrap().is_err());
    assert!(topic::parse("sensors/kitchen").is_none());
}
