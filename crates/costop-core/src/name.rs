//! [`Name`]: the names in a snapshot of the cluster.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smol_str::SmolStr;
use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

/// A name in a snapshot of the cluster (node, pod, workload, volume,
/// instance id, zone). Snapshots are taken often and share their names: a
/// clone never copies text to the heap (up to 23 bytes the text is held
/// inline, longer text is shared behind a reference count).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Name(SmolStr);

impl Name {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Name(SmolStr::new(s))
    }
}

impl From<String> for Name {
    fn from(s: String) -> Self {
        Name(SmolStr::from(s))
    }
}

impl From<&String> for Name {
    fn from(s: &String) -> Self {
        Name(SmolStr::new(s))
    }
}

impl From<Name> for String {
    fn from(n: Name) -> Self {
        n.0.into()
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        &*self.0 == other.as_str()
    }
}

impl PartialEq<Name> for str {
    fn eq(&self, other: &Name) -> bool {
        self == &*other.0
    }
}

impl PartialEq<Name> for &str {
    fn eq(&self, other: &Name) -> bool {
        *self == &*other.0
    }
}

impl PartialEq<Name> for String {
    fn eq(&self, other: &Name) -> bool {
        self.as_str() == &*other.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Name::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_compares_with_text_and_round_trips_through_json() {
        let n = Name::from("node-1");
        let text = String::from("node-1");
        assert_eq!(n, "node-1");
        assert_eq!("node-1", n);
        assert_eq!(n, text);
        assert_ne!(n, "node-2");
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"node-1\"");
        assert_eq!(serde_json::from_str::<Name>("\"node-1\"").unwrap(), n);
        let set: std::collections::BTreeSet<Name> = [n.clone()].into();
        assert!(set.contains("node-1"));
    }
}
