//! Class migrations (wrangler's `[[migrations]]`): renamed and deleted
//! classes, and the namespace table they resolve to.
//!
//! Every bound namespace has a binding name (what callers, routes and the
//! gRPC API name) and a storage *identity* (what its ids are derived from
//! and what its keys and alarms are stored under). The identity is the
//! binding name unless the class was renamed: after `OLD -> NEW`, binding
//! `NEW` keeps identity `OLD`, so every object keeps its id, its storage and
//! its alarms without a byte moving; `OLD` is no longer served. A deleted
//! class's identity is reclaimed in the background (`runtime/reclaim.rs`).
//!
//! Pure: no I/O. Every node and edge of a cluster must declare the same
//! migrations: they are part of the app's deployment.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::id::{ObjectId, ObjectKey};

/// Why a set of migrations cannot be served with the bound classes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("invalid class name `{0}` in a migration (1..=255 bytes)")]
    InvalidName(String),
    #[error("invalid renamed class `{0}`: expected OLD=NEW")]
    InvalidRename(String),
    #[error("class `{0}` is renamed to itself")]
    SelfRename(String),
    #[error("class `{0}` is renamed twice")]
    RenamedTwice(String),
    #[error("two classes are renamed to `{0}`")]
    TwoRenamedTo(String),
    #[error("the renames of `{0}` form a cycle")]
    Cycle(String),
    #[error("class `{0}` was renamed, so it cannot be bound (bind its new name)")]
    RenamedButBound(String),
    #[error("class `{0}` is renamed to `{1}`, which is neither bound nor deleted")]
    RenamedToNothing(String, String),
    #[error("class `{0}` is deleted, so it cannot be bound")]
    DeletedButBound(String),
    #[error("class `{0}` is deleted but was renamed: delete its new name")]
    DeletedButRenamed(String),
}

/// The migrations an app declares: classes renamed (`OLD -> NEW`) and
/// classes deleted, in any order (chains `A -> B`, `B -> C` resolve to `A`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Migrations {
    renamed: Vec<(Arc<str>, Arc<str>)>,
    deleted: Vec<Arc<str>>,
}

impl Migrations {
    /// Class `old` is now bound as `new`, keeping its objects.
    pub fn rename(&mut self, old: &str, new: &str) {
        self.renamed.push((Arc::from(old), Arc::from(new)));
    }

    /// Class `name` is gone: its objects' storage and alarms are reclaimed.
    pub fn delete(&mut self, name: &str) {
        self.deleted.push(Arc::from(name));
    }

    /// Adds a rename written `OLD=NEW` (the config's form).
    pub fn rename_spec(&mut self, spec: &str) -> Result<(), Error> {
        let (old, new) = parse_rename(spec)?;
        self.rename(old, new);
        Ok(())
    }

    /// Adds every migration of `other`.
    pub fn extend(&mut self, other: &Migrations) {
        self.renamed.extend(other.renamed.iter().cloned());
        self.deleted.extend(other.deleted.iter().cloned());
    }

    pub fn is_empty(&self) -> bool {
        self.renamed.is_empty() && self.deleted.is_empty()
    }
}

/// Splits `OLD=NEW`, both names valid.
pub fn parse_rename(spec: &str) -> Result<(&str, &str), Error> {
    let (old, new) = spec
        .split_once('=')
        .ok_or_else(|| Error::InvalidRename(spec.to_owned()))?;
    let (old, new) = (old.trim(), new.trim());
    check_name(old).map_err(|_| Error::InvalidRename(spec.to_owned()))?;
    check_name(new).map_err(|_| Error::InvalidRename(spec.to_owned()))?;
    Ok((old, new))
}

fn check_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > 255 {
        return Err(Error::InvalidName(name.to_owned()));
    }
    Ok(())
}

/// The bound namespaces with their storage identities, and the identities
/// of deleted classes. Cheap to clone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Namespaces {
    /// Binding name → identity.
    identities: Arc<BTreeMap<Arc<str>, Arc<str>>>,
    /// Identity → binding name (the inverse: identities are unique).
    bindings: Arc<BTreeMap<Arc<str>, Arc<str>>>,
    /// Identities whose storage is reclaimed.
    deleted: Arc<BTreeSet<Arc<str>>>,
}

impl Namespaces {
    /// Bindings without migrations: each identity is its binding name.
    pub fn plain(bound: impl IntoIterator<Item = Arc<str>>) -> Namespaces {
        let identities: BTreeMap<_, _> = bound.into_iter().map(|b| (b.clone(), b)).collect();
        Namespaces {
            bindings: Arc::new(identities.clone()),
            identities: Arc::new(identities),
            deleted: Arc::default(),
        }
    }

    /// Resolves `migrations` against the bound names: each binding's
    /// identity (the start of its rename chain) and the deleted identities.
    /// Refuses a renamed or deleted class that is also bound, a rename to
    /// nothing, and ambiguous or cyclic renames.
    pub fn resolve(
        bound: impl IntoIterator<Item = Arc<str>>,
        migrations: &Migrations,
    ) -> Result<Namespaces, Error> {
        let bound: BTreeSet<Arc<str>> = bound.into_iter().collect();
        // new → old, checked one to one.
        let mut renamed_from: BTreeMap<&Arc<str>, &Arc<str>> = BTreeMap::new();
        let mut renamed_to: BTreeMap<&Arc<str>, &Arc<str>> = BTreeMap::new();
        for (old, new) in &migrations.renamed {
            check_name(old)?;
            check_name(new)?;
            if old == new {
                return Err(Error::SelfRename(old.to_string()));
            }
            if renamed_to.insert(old, new).is_some() {
                return Err(Error::RenamedTwice(old.to_string()));
            }
            if renamed_from.insert(new, old).is_some() {
                return Err(Error::TwoRenamedTo(new.to_string()));
            }
        }
        let deleted_names: BTreeSet<&Arc<str>> = migrations.deleted.iter().collect();
        for name in &deleted_names {
            check_name(name)?;
            if bound.contains(*name) {
                return Err(Error::DeletedButBound(name.to_string()));
            }
            if renamed_to.contains_key(name) {
                return Err(Error::DeletedButRenamed(name.to_string()));
            }
        }
        for (old, new) in &renamed_to {
            if bound.contains(*old) {
                return Err(Error::RenamedButBound(old.to_string()));
            }
            let end = chain_end(old, &renamed_to)?;
            if !bound.contains(end) && !deleted_names.contains(end) {
                return Err(Error::RenamedToNothing(old.to_string(), new.to_string()));
            }
        }
        let root = |name: &Arc<str>| -> Arc<str> {
            let mut at = name;
            // Terminates: renames are one to one and acyclic (checked above).
            while let Some(prev) = renamed_from.get(at) {
                at = prev;
            }
            at.clone()
        };
        let identities: BTreeMap<Arc<str>, Arc<str>> =
            bound.iter().map(|b| (b.clone(), root(b))).collect();
        let bindings = identities
            .iter()
            .map(|(b, i)| (i.clone(), b.clone()))
            .collect();
        let deleted = deleted_names.iter().map(|d| root(d)).collect();
        Ok(Namespaces {
            identities: Arc::new(identities),
            bindings: Arc::new(bindings),
            deleted: Arc::new(deleted),
        })
    }

    /// The storage identity of binding `binding`, if it is bound.
    pub fn identity(&self, binding: &str) -> Option<&Arc<str>> {
        self.identities.get(binding)
    }

    /// The binding that serves identity `identity`, if any.
    pub fn binding(&self, identity: &str) -> Option<&Arc<str>> {
        self.bindings.get(identity)
    }

    /// The key of the object named `name` in namespace `namespace`: its id
    /// derived from the namespace's identity (the namespace itself if it is
    /// not bound), carrying the name (`id.name`).
    pub fn key_from_name(&self, namespace: &str, name: &str) -> ObjectKey {
        let identity = self.identity(namespace).map_or(namespace, |i| &**i);
        ObjectKey::new(namespace, ObjectId::from_name(identity, name)).with_name(name)
    }

    /// Whether `name` is the name `key`'s id was made from.
    pub fn is_name_of(&self, key: &ObjectKey, name: &str) -> bool {
        self.key_from_name(&key.namespace, name).id == key.id
    }

    /// The bound names, in order.
    pub fn names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.identities.keys()
    }

    /// The identities of deleted classes, whose storage is reclaimed.
    pub fn deleted(&self) -> impl Iterator<Item = &Arc<str>> {
        self.deleted.iter()
    }
}

impl From<Vec<Arc<str>>> for Namespaces {
    fn from(bound: Vec<Arc<str>>) -> Namespaces {
        Namespaces::plain(bound)
    }
}

/// Where the renames starting at `name` end.
fn chain_end<'a>(
    name: &'a Arc<str>,
    renamed_to: &BTreeMap<&'a Arc<str>, &'a Arc<str>>,
) -> Result<&'a Arc<str>, Error> {
    let mut at = name;
    for _ in 0..=renamed_to.len() {
        match renamed_to.get(at) {
            Some(next) => at = next,
            None => return Ok(at),
        }
    }
    Err(Error::Cycle(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<Arc<str>> {
        list.iter().map(|n| Arc::from(*n)).collect()
    }

    fn migrations(renamed: &[(&str, &str)], deleted: &[&str]) -> Migrations {
        let mut m = Migrations::default();
        for (old, new) in renamed {
            m.rename(old, new);
        }
        for d in deleted {
            m.delete(d);
        }
        m
    }

    fn resolve(bound: &[&str], m: &Migrations) -> Result<Namespaces, Error> {
        Namespaces::resolve(names(bound), m)
    }

    #[test]
    fn without_migrations_each_identity_is_its_name() {
        let ns = resolve(&["A", "B"], &Migrations::default()).expect("resolves");
        assert_eq!(ns, Namespaces::plain(names(&["A", "B"])));
        assert_eq!(ns.identity("A").map(|i| &**i), Some("A"));
        assert_eq!(ns.binding("B").map(|b| &**b), Some("B"));
        assert_eq!(ns.deleted().count(), 0);
    }

    #[test]
    fn a_renamed_class_keeps_its_identity_and_its_old_name_is_unbound() {
        let ns = resolve(&["NEW", "OTHER"], &migrations(&[("OLD", "NEW")], &[])).expect("ok");
        assert_eq!(ns.identity("NEW").map(|i| &**i), Some("OLD"));
        assert_eq!(ns.binding("OLD").map(|b| &**b), Some("NEW"));
        assert_eq!(ns.identity("OLD"), None, "the old name is not served");
        assert_eq!(ns.binding("NEW"), None, "nothing is stored under NEW");
        assert_eq!(ns.identity("OTHER").map(|i| &**i), Some("OTHER"));
    }

    #[test]
    fn rename_chains_resolve_to_the_first_name_in_any_order() {
        let m = migrations(&[("B", "C"), ("A", "B")], &[]);
        let ns = resolve(&["C"], &m).expect("ok");
        assert_eq!(ns.identity("C").map(|i| &**i), Some("A"));
        assert_eq!(ns.names().count(), 1);
    }

    #[test]
    fn a_deleted_class_reclaims_its_identity_even_after_a_rename() {
        let ns = resolve(&["KEEP"], &migrations(&[], &["GONE"])).expect("ok");
        assert_eq!(ns.deleted().map(|d| &**d).collect::<Vec<_>>(), ["GONE"]);
        assert_eq!(ns.identity("GONE"), None);
        let ns = resolve(&["KEEP"], &migrations(&[("A", "B")], &["B"])).expect("ok");
        assert_eq!(ns.deleted().map(|d| &**d).collect::<Vec<_>>(), ["A"]);
    }

    #[test]
    fn conflicting_migrations_are_refused() {
        let cases: Vec<(&[&str], Migrations, Error)> = vec![
            (
                &["A"],
                migrations(&[], &["A"]),
                Error::DeletedButBound("A".into()),
            ),
            (
                &["A", "B"],
                migrations(&[("A", "B")], &[]),
                Error::RenamedButBound("A".into()),
            ),
            (
                &["C"],
                migrations(&[("A", "B"), ("B", "C")], &["B"]),
                Error::DeletedButRenamed("B".into()),
            ),
            (
                &["X"],
                migrations(&[("A", "B")], &[]),
                Error::RenamedToNothing("A".into(), "B".into()),
            ),
            (
                &["A"],
                migrations(&[("A", "A")], &[]),
                Error::SelfRename("A".into()),
            ),
            (
                &["B", "C"],
                migrations(&[("A", "B"), ("A", "C")], &[]),
                Error::RenamedTwice("A".into()),
            ),
            (
                &["C"],
                migrations(&[("A", "C"), ("B", "C")], &[]),
                Error::TwoRenamedTo("C".into()),
            ),
            (
                &["X"],
                migrations(&[("A", "B"), ("B", "A")], &[]),
                Error::Cycle("A".into()),
            ),
            (
                &["X"],
                migrations(&[], &[""]),
                Error::InvalidName("".into()),
            ),
        ];
        for (bound, m, expected) in cases {
            assert_eq!(resolve(bound, &m), Err(expected), "{m:?}");
        }
    }

    #[test]
    fn renames_parse_from_old_equals_new() {
        assert_eq!(parse_rename("OLD=NEW"), Ok(("OLD", "NEW")));
        assert_eq!(parse_rename(" OLD = NEW "), Ok(("OLD", "NEW")));
        for bad in ["OLD", "=NEW", "OLD=", ""] {
            assert_eq!(
                parse_rename(bad),
                Err(Error::InvalidRename(bad.into())),
                "{bad}"
            );
        }
    }
}
