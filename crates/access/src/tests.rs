//! The rule as a table: every role against every action, for a plain entity set and for
//! Observations, in the principal's project, in another project and in an open-data project.

use expect_test::expect;
use model::EntityType;
use odata::Visibility;

use crate::{Action, Decision, Grant, Hub, Identity, Principal, Role};

const MINE: i64 = 2;
const OTHER: i64 = 3;
const OPEN: i64 = 4;

fn user(role: Role) -> Principal {
    Principal {
        identity: Identity::User { id: 7, name: "ada".into() },
        hub_admin: false,
        grants: vec![Grant { project: MINE, role }],
    }
}

fn hub() -> Hub {
    Hub { open_data: vec![OPEN] }
}

/// One letter per action (read, create, update, delete, manage members): A allow, U
/// unauthenticated, F forbidden.
fn row(principal: &Principal, entity: EntityType, project: i64) -> String {
    [Action::Read, Action::Create, Action::Update, Action::Delete, Action::ManageMembers]
        .into_iter()
        .map(|action| match principal.decide(&hub(), action, entity, project) {
            Decision::Allow => 'A',
            Decision::Unauthenticated => 'U',
            Decision::Forbidden => 'F',
        })
        .collect()
}

#[test]
fn roles_allow_what_they_say_in_their_project_only() {
    let mut table = String::from("role         Things  Obs.    other   open\n");
    for role in Role::ALL {
        let p = user(role);
        let cells = [
            row(&p, EntityType::Thing, MINE),
            row(&p, EntityType::Observation, MINE),
            row(&p, EntityType::Observation, OTHER),
            row(&p, EntityType::Observation, OPEN),
        ];
        table.push_str(&format!("{:<12} {}\n", role.name(), cells.join("   ")));
    }
    expect![[r#"
        role         Things  Obs.    other   open
        viewer       AFFFF   AFFFF   FFFFF   AFFFF
        contributor  AFFFF   AAFFF   FFFFF   AFFFF
        editor       AAAAF   AAAAF   FFFFF   AFFFF
        admin        AAAAA   AAAAA   FFFFF   AFFFF
    "#]]
    .assert_eq(&table);
}

#[test]
fn contributors_may_create_the_features_of_their_observations() {
    let p = user(Role::Contributor);
    assert_eq!(p.decide(&hub(), Action::Create, EntityType::FeatureOfInterest, MINE), Decision::Allow);
    assert_eq!(p.decide(&hub(), Action::Create, EntityType::Datastream, MINE), Decision::Forbidden);
}

#[test]
fn anonymous_callers_read_open_data_and_are_asked_to_authenticate_for_the_rest() {
    let anonymous = Principal::anonymous();
    assert_eq!(row(&anonymous, EntityType::Thing, OPEN), "AUUUU");
    assert_eq!(row(&anonymous, EntityType::Thing, MINE), "UUUUU");
    assert_eq!(anonymous.visibility(&hub()), Visibility::Projects(vec![OPEN]));
    assert_eq!(anonymous.visibility(&Hub::default()), Visibility::Projects(Vec::new()), "deny by default");
}

#[test]
fn hub_admins_and_the_server_see_and_do_everything() {
    let admin =
        Principal { identity: Identity::User { id: 1, name: "root".into() }, hub_admin: true, grants: Vec::new() };
    for principal in [admin, Principal::server()] {
        assert_eq!(row(&principal, EntityType::Thing, OTHER), "AAAAA");
        assert_eq!(principal.visibility(&hub()), Visibility::All);
    }
}

#[test]
fn visibility_is_the_granted_projects_and_the_open_ones_once_each() {
    let mut p = user(Role::Viewer);
    p.grants.push(Grant { project: OPEN, role: Role::Editor });
    p.grants.push(Grant { project: MINE, role: Role::Editor });
    assert_eq!(p.visibility(&hub()), Visibility::Projects(vec![MINE, OPEN]));
    assert_eq!(p.role_in(MINE), Some(Role::Editor), "the highest role counts");
}

#[test]
fn role_names_round_trip() {
    for role in Role::ALL {
        assert_eq!(Role::parse(role.name()), Some(role));
    }
    assert_eq!(Role::parse("owner"), None);
}

#[test]
fn tokens_are_random_prefixed_and_found_by_their_hash_only() {
    use crate::credentials::{TOKEN_PREFIX, new_token, token_hash};
    let (first, first_hash) = new_token().expect("randomness");
    let (second, _) = new_token().expect("randomness");
    assert_ne!(first, second);
    assert!(first.as_str().starts_with(TOKEN_PREFIX) && first.as_str().len() == TOKEN_PREFIX.len() + 64);
    assert_eq!(token_hash(first.as_str()), Some(first_hash.clone()));
    assert_ne!(first_hash.0, first.as_str(), "the hash is not the secret");
    assert_eq!(format!("{first:?}"), "TokenSecret(<secret>)", "a secret never prints");
    for not_a_token in ["", "tbt_", "tbt_xyz", "Bearer tbt_00", &first.as_str()[..40], &format!("{}0", first.as_str())]
    {
        assert_eq!(token_hash(not_a_token), None, "{not_a_token:?}");
    }
}

#[test]
fn passwords_are_salted_argon2_and_verify_only_themselves() {
    use crate::credentials::{CredentialError, hash_password, verify_password};
    let stored = hash_password("correct horse battery").expect("hashes");
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    assert_ne!(stored, hash_password("correct horse battery").expect("hashes"), "a fresh salt each time");
    assert!(verify_password("correct horse battery", &stored));
    assert!(!verify_password("correct horse batterY", &stored));
    assert!(!verify_password("correct horse battery", "not a PHC string"));
    assert_eq!(hash_password("short"), Err(CredentialError::PasswordTooShort));
}
