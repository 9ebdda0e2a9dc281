//! Changes told to the other nodes sharing the database (`store::Writer::announce`), and read
//! back from theirs: several stateless Thingbase nodes on one PostgreSQL database each notify
//! their own MQTT subscribers of every node's changes.
//!
//! A message is text: a first line `tb1 <node>` (the sender, so a node skips its own), then a
//! line per change: `C <set> <id>[-<last id>]` (created; consecutive ids as a range), `U <set>
//! <id>`, `D <set> <id>`, `L <set> <navigation> <from> <to>` (linked). Sets are entity-set
//! names (`Observations`). A job's changes take as many messages as they need, each within
//! `store::ANNOUNCEMENT_BYTES`. Records do not travel: the receiving node reads what it
//! notifies about. The store may join the messages of one write group that share their first
//! line (`store::Writer::announce`), so a message holds the changes of one job or of several.
//!
//! An access change is the line `tb1 <node> access` alone ([`encode_access`]): a first line
//! of its own, so it is never joined with changes, and a node of an earlier version reads it
//! as a message it does not know.

use model::{EntityType, Id};

use crate::Change;

const VERSION: &str = "tb1";

/// The messages announcing `changes` of node `node`.
pub fn encode(node: u64, changes: &[Change]) -> Vec<String> {
    let header = format!("{VERSION} {node:016x}\n");
    let mut lines: Vec<String> = Vec::new();
    let mut i = 0;
    while i < changes.len() {
        let line = match &changes[i] {
            Change::Created { entity, id, .. } => {
                // A run of consecutive ids of one entity type (an insert of many).
                let mut last = *id;
                while let Some(Change::Created { entity: next_entity, id: next, .. }) = changes.get(i + 1)
                    && next_entity == entity
                    && next.0 == last.0 + 1
                {
                    last = *next;
                    i += 1;
                }
                if last == *id {
                    format!("C {} {id}", entity.set_name())
                } else {
                    format!("C {} {id}-{last}", entity.set_name())
                }
            }
            Change::Updated { entity, id } => format!("U {} {id}", entity.set_name()),
            Change::Deleted { entity, id } => format!("D {} {id}", entity.set_name()),
            Change::Linked { navigation, from, to } => {
                let source = EntityType::ALL.into_iter().find(|e| e.navigations().contains(navigation));
                match source {
                    Some(source) => format!("L {} {} {from} {to}", source.set_name(), navigation.name),
                    None => {
                        i += 1;
                        continue;
                    }
                }
            }
        };
        lines.push(line);
        i += 1;
    }
    let mut messages = Vec::new();
    let mut message = header.clone();
    for line in lines {
        if message.len() + line.len() + 1 > store::ANNOUNCEMENT_BYTES && message.len() > header.len() {
            messages.push(std::mem::replace(&mut message, header.clone()));
        }
        message.push_str(&line);
        message.push('\n');
    }
    if message.len() > header.len() {
        messages.push(message);
    }
    messages
}

/// The message telling the other nodes that node `node` changed who may do what (a token,
/// user, role, project or device): they forget the principals they hold at once instead of
/// within their caches' 10 seconds. A node of an older version cannot read it and ignores it.
pub fn encode_access(node: u64) -> String {
    format!("{VERSION} {node:016x} access\n")
}

/// The sending node of an access message (`encode_access`); `None` for any other message.
pub fn access_of(message: &str) -> Option<u64> {
    let mut lines = message.lines();
    let node = lines.next()?.strip_prefix(VERSION)?.strip_prefix(' ')?.strip_suffix(" access")?;
    if lines.next().is_some() {
        return None;
    }
    parse_node(node)
}

/// The sending node of a message of changes, read off its first line alone (so that a node
/// skips its own without reading the rest); `None` for any other message.
pub fn sender(message: &str) -> Option<u64> {
    let first = message.split('\n').next()?;
    parse_node(first.strip_prefix(VERSION)?.strip_prefix(' ')?)
}

/// Sixteen hexadecimal digits.
fn parse_node(text: &str) -> Option<u64> {
    if text.len() != 16 {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

/// The sending node and the changes of a message; `None` for one this version cannot read.
pub fn decode(message: &str) -> Option<(u64, Vec<Change>)> {
    let node = sender(message)?;
    let mut lines = message.lines();
    lines.next();
    let mut changes = Vec::new();
    for line in lines {
        let parts: Vec<&str> = line.split(' ').collect();
        let entity = EntityType::from_set_name(parts.get(1)?)?;
        let id = |text: &str| text.parse::<i64>().ok().map(Id);
        match (parts[0], parts.len()) {
            ("C", 3) => {
                let (first, last) = match parts[2].split_once('-') {
                    Some((first, last)) => (id(first)?, id(last)?),
                    None => (id(parts[2])?, id(parts[2])?),
                };
                // A run stays within what one message can name; a longer claim is no message
                // of ours.
                if last.0 < first.0 || last.0 - first.0 > 10_000_000 {
                    return None;
                }
                changes.extend((first.0..=last.0).map(|n| Change::Created { entity, id: Id(n), record: None }));
            }
            ("U", 3) => changes.push(Change::Updated { entity, id: id(parts[2])? }),
            ("D", 3) => changes.push(Change::Deleted { entity, id: id(parts[2])? }),
            ("L", 5) => {
                let navigation = entity.navigation(parts[2])?;
                changes.push(Change::Linked { navigation, from: id(parts[3])?, to: id(parts[4])? });
            }
            _ => return None,
        }
    }
    Some((node, changes))
}
