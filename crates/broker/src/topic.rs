//! Topic names, topic filters and the subscription tree that matches one against the other.
//!
//! The rules are MQTT 5.0 §4.7 (the same as 3.1.1 §4.7): levels are separated by `/`; a filter's
//! `+` matches exactly one level and must fill its level; `#` matches any number of levels
//! (including none, so `a/#` matches `a`) and must be the last level; names contain neither; both
//! are non-empty, at most 65,535 bytes and free of U+0000. A topic starting with `$` is not
//! matched by a filter starting with a wildcard (§4.7.2), so `#` does not see `$SYS/...`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// The longest topic the wire format can carry (a two-byte length prefix).
const MAXIMUM_TOPIC_LENGTH: usize = 65_535;

/// Why a string is not a topic name or topic filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("a topic must not be empty")]
    Empty,
    #[error("a topic must not be longer than 65535 bytes")]
    TooLong,
    #[error("a topic must not contain the null character")]
    NullCharacter,
    #[error("a topic name must not contain the wildcards `+` or `#`")]
    WildcardInName,
    #[error("`+` must fill a whole level of a topic filter")]
    SingleLevelWildcardNotAlone,
    #[error("`#` must be the last level of a topic filter and fill it")]
    MultiLevelWildcardNotLast,
}

fn check_common(text: &str) -> Result<(), TopicError> {
    if text.is_empty() {
        return Err(TopicError::Empty);
    }
    if text.len() > MAXIMUM_TOPIC_LENGTH {
        return Err(TopicError::TooLong);
    }
    if text.contains('\0') {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

/// A topic a message is published to: no wildcards. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(Arc<str>);

impl TopicName {
    pub fn new(text: &str) -> Result<Self, TopicError> {
        check_common(text)?;
        if text.contains(['+', '#']) {
            return Err(TopicError::WildcardInName);
        }
        Ok(Self(text.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn levels(&self) -> std::str::Split<'_, char> {
        self.0.split('/')
    }

    /// `$SYS/...` and other topics reserved for the server (§4.7.2).
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicName({:?})", &*self.0)
    }
}

/// A subscription pattern, possibly with `+` and `#` wildcards.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(Arc<str>);

impl TopicFilter {
    pub fn new(text: &str) -> Result<Self, TopicError> {
        check_common(text)?;
        let mut levels = text.split('/').peekable();
        while let Some(level) = levels.next() {
            if level.contains('+') && level != "+" {
                return Err(TopicError::SingleLevelWildcardNotAlone);
            }
            if level.contains('#') && (level != "#" || levels.peek().is_some()) {
                return Err(TopicError::MultiLevelWildcardNotLast);
            }
        }
        Ok(Self(text.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn levels(&self) -> std::str::Split<'_, char> {
        self.0.split('/')
    }

    /// A shared subscription (`$share/group/filter`, MQTT 5.0 §4.8.2), which this broker does not
    /// offer: it would be delivered as an ordinary subscription to a topic starting with `$share`.
    pub fn is_shared(&self) -> bool {
        self.0.starts_with("$share/")
    }

    /// Whether a message published to `topic` reaches a subscription with this filter.
    pub fn matches(&self, topic: &TopicName) -> bool {
        let mut filter_levels = self.levels();
        let mut topic_levels = topic.levels();
        let mut first = true;
        loop {
            match (filter_levels.next(), topic_levels.next()) {
                (Some("#"), _) => return !(first && topic.is_system()),
                (Some("+"), Some(_)) if first && topic.is_system() => return false,
                (Some("+"), Some(_)) => {}
                (Some(filter), Some(level)) if filter == level => {}
                (None, None) => return true,
                _ => return false,
            }
            first = false;
        }
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicFilter({:?})", &*self.0)
    }
}

/// Subscriptions indexed by filter level, so matching a topic costs one walk down the tree
/// instead of a test of every filter. Each leaf holds the subscribers and their value `V`.
#[derive(Debug)]
pub(crate) struct SubscriptionTree<K, V> {
    root: Node<K, V>,
    len: usize,
}

#[derive(Debug)]
struct Node<K, V> {
    children: HashMap<Box<str>, Node<K, V>>,
    subscribers: HashMap<K, V>,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Self { children: HashMap::new(), subscribers: HashMap::new() }
    }
}

impl<K: Eq + std::hash::Hash + Clone, V> SubscriptionTree<K, V> {
    pub(crate) fn new() -> Self {
        Self { root: Node::default(), len: 0 }
    }

    /// The number of (filter, subscriber) pairs.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Adds or replaces `subscriber`'s subscription to `filter`; true if it is new.
    pub(crate) fn insert(&mut self, filter: &TopicFilter, subscriber: K, value: V) -> bool {
        let mut node = &mut self.root;
        for level in filter.levels() {
            node = node.children.entry(level.into()).or_default();
        }
        let added = node.subscribers.insert(subscriber, value).is_none();
        if added {
            self.len += 1;
        }
        added
    }

    /// Removes `subscriber`'s subscription to `filter`; true if there was one. Empty branches are
    /// pruned so that the tree does not keep every filter ever used.
    pub(crate) fn remove(&mut self, filter: &TopicFilter, subscriber: &K) -> bool {
        fn remove_below<K: Eq + std::hash::Hash, V>(
            node: &mut Node<K, V>,
            mut levels: std::str::Split<'_, char>,
            subscriber: &K,
        ) -> bool {
            let Some(level) = levels.next() else {
                return node.subscribers.remove(subscriber).is_some();
            };
            let Some(child) = node.children.get_mut(level) else { return false };
            let removed = remove_below(child, levels, subscriber);
            if child.children.is_empty() && child.subscribers.is_empty() {
                node.children.remove(level);
            }
            removed
        }
        let removed = remove_below(&mut self.root, filter.levels(), subscriber);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Calls `visit` for every subscription whose filter matches `topic`. A subscriber with
    /// several matching filters is visited once per filter.
    pub(crate) fn for_each_match<'tree>(&'tree self, topic: &TopicName, mut visit: impl FnMut(&'tree K, &'tree V)) {
        fn walk<'tree, K, V>(
            node: &'tree Node<K, V>,
            levels: &[&str],
            first: bool,
            system: bool,
            visit: &mut impl FnMut(&'tree K, &'tree V),
        ) {
            let wildcards_allowed = !(first && system);
            if wildcards_allowed && let Some(all) = node.children.get("#") {
                all.subscribers.iter().for_each(|(k, v)| visit(k, v));
            }
            let Some((level, rest)) = levels.split_first() else {
                node.subscribers.iter().for_each(|(k, v)| visit(k, v));
                return;
            };
            if let Some(exact) = node.children.get(*level) {
                walk(exact, rest, false, system, visit);
            }
            if wildcards_allowed && let Some(one) = node.children.get("+") {
                walk(one, rest, false, system, visit);
            }
        }
        let levels: Vec<&str> = topic.levels().collect();
        walk(&self.root, &levels, true, topic.is_system(), &mut visit);
    }
}
