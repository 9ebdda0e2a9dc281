//! Conformance class "Batch Requests" in the OData 4.0 multipart format: plain parts, a change
//! set that commits as one, a change set that rolls back entirely, and `$<Content-ID>`
//! references.

use crate::support::{TestServer, request};

const THING: &str = r#"{"name": "batched", "description": "made in a change set"}"#;

fn batch(server: &TestServer, body: &str) -> String {
    let response = request(
        "POST",
        &server.url("/$batch"),
        Some(body.replace('\n', "\r\n")),
        Some("multipart/mixed; boundary=batch_1"),
    );
    assert_eq!(response.status, 200, "{}", response.text);
    response.text
}

#[test]
fn multipart_change_set_commits_together_and_references_content_ids() {
    let server = TestServer::start("batch-multipart");
    let body = format!(
        "--batch_1
Content-Type: multipart/mixed; boundary=changeset_1

--changeset_1
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 1

POST Things HTTP/1.1
Content-Type: application/json

{THING}
--changeset_1
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 2

POST $1/Locations HTTP/1.1
Content-Type: application/json

{{\"name\": \"here\", \"description\": \"d\", \"encodingType\": \"application/geo+json\", \"location\": {{\"type\": \"Point\", \"coordinates\": [1, 2]}}}}
--changeset_1--
--batch_1
Content-Type: application/http
Content-Transfer-Encoding: binary

GET Things?$expand=Locations HTTP/1.1


--batch_1--
"
    );
    let answer = batch(&server, &body);
    assert_eq!(answer.matches("HTTP/1.1 201 Created").count(), 2, "{answer}");
    assert!(answer.contains("\"here\""), "the GET after the change set sees its Location: {answer}");
    let things = server.get("/Things?$expand=Locations").json;
    assert_eq!(things["value"][0]["Locations"][0]["name"], "here");
}

#[test]
fn multipart_change_set_rolls_back_when_one_request_fails() {
    let server = TestServer::start("batch-multipart-rollback");
    let body = format!(
        "--batch_1
Content-Type: multipart/mixed; boundary=changeset_1

--changeset_1
Content-Type: application/http
Content-ID: 1

POST Things HTTP/1.1
Content-Type: application/json

{THING}
--changeset_1
Content-Type: application/http
Content-ID: 2

POST Things HTTP/1.1
Content-Type: application/json

{{\"name\": \"no description\"}}
--changeset_1--
--batch_1--
"
    );
    let answer = batch(&server, &body);
    assert!(answer.contains("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("HTTP/1.1 424"), "{answer}");
    assert_eq!(server.get("/Things?$count=true").json["@iot.count"], 0, "nothing of the change set stays");
}
