//! Workers: the stateless request handlers in front of objects (Cloudflare's
//! Worker with its `env`), and the stubs they call objects through.

use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::Error;
use super::client::{CallResult, ObjectClient};
use super::http::{Request, Response};
use super::migrations::Namespaces;
use super::socket::SocketLink;
use super::vars::Vars;
use crate::id::{self, NamedId, ObjectId, ObjectKey};

/// A stateless handler that routes requests to objects (the seed's router).
pub trait Worker: Send + Sync + 'static {
    fn fetch(&self, req: Request, env: &Env) -> impl Future<Output = Response> + Send;
}

/// What a worker (or an object, `Context::env`) can reach: the object
/// namespaces (bindings), and the app's vars and secrets (`vars.rs`).
#[derive(Clone)]
pub struct Env {
    client: Arc<dyn ObjectClient>,
    /// The bound names and their storage identities (`migrations.rs`).
    namespaces: Namespaces,
    vars: Arc<Vars>,
}

impl Env {
    /// The namespaces reached through `client` (a list of bound names, or
    /// [`Namespaces`] after class migrations), with this process's vars
    /// and secrets ([`Vars::from_process`]).
    pub fn new(client: Arc<dyn ObjectClient>, namespaces: impl Into<Namespaces>) -> Self {
        Env {
            client,
            namespaces: namespaces.into(),
            vars: Vars::from_process(),
        }
    }

    /// The same bindings with other vars and secrets.
    pub fn with_vars(mut self, vars: Arc<Vars>) -> Self {
        self.vars = vars;
        self
    }

    /// The var `name` (`ROOST_VAR_<name>`).
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.var(name)
    }

    /// The secret `name` (`ROOST_SECRET_<name>`).
    pub fn secret(&self, name: &str) -> Option<&str> {
        self.vars.secret(name)
    }

    /// The namespace bound as `binding`.
    pub fn namespace(&self, binding: &str) -> Result<Namespace, Error> {
        let (name, identity) = self
            .namespaces
            .names()
            .find(|n| &***n == binding)
            .and_then(|n| Some((n.clone(), self.namespaces.identity(n)?.clone())))
            .ok_or_else(|| Error::UnknownNamespace(binding.to_owned()))?;
        Ok(Namespace {
            name,
            identity,
            client: self.client.clone(),
        })
    }
}

/// One class's objects (Cloudflare's `DurableObjectNamespace`).
#[derive(Clone)]
pub struct Namespace {
    name: Arc<str>,
    /// What ids are derived from: the name, or the class's name before a
    /// rename (`migrations.rs`).
    identity: Arc<str>,
    client: Arc<dyn ObjectClient>,
}

impl Namespace {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The id `name` maps to, carrying the name (`id.name`): a stub made
    /// from it lets the object see the name ([`super::Context::name`]).
    pub fn id_from_name(&self, name: &str) -> NamedId {
        NamedId::new(ObjectId::from_name(&self.identity, name), name)
    }

    /// A stub to the object named `name` (Cloudflare's `getByName`).
    pub fn get_by_name(&self, name: &str) -> Stub {
        self.get(self.id_from_name(name))
    }

    pub fn new_unique_id(&self) -> ObjectId {
        ObjectId::new_unique()
    }

    pub fn id_from_string(&self, s: &str) -> Result<ObjectId, id::Error> {
        ObjectId::parse(s)
    }

    /// A stub to call the object with `id` (an [`ObjectId`], or a
    /// [`NamedId`] from [`Self::id_from_name`] whose name travels along).
    pub fn get(&self, id: impl Into<NamedId>) -> Stub {
        Stub {
            key: id.into().key(self.name.clone()),
            client: self.client.clone(),
        }
    }
}

/// A handle to one object.
#[derive(Clone)]
pub struct Stub {
    key: ObjectKey,
    client: Arc<dyn ObjectClient>,
}

/// Carries an accepted socket's link on a 101 response out of a worker to
/// the edge. (Response extensions must be `Clone`; the edge takes it once.)
#[derive(Clone, Debug)]
pub struct UpgradeLink(Arc<Mutex<Option<SocketLink>>>);

impl UpgradeLink {
    pub fn take(&self) -> Option<SocketLink> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Stub {
    pub fn key(&self) -> &ObjectKey {
        &self.key
    }

    /// The object's id.
    pub fn id(&self) -> ObjectId {
        self.key.id
    }

    /// The name the stub's id was made from (`id.name`), if it was.
    pub fn name(&self) -> Option<&str> {
        self.key.name().map(|n| &**n)
    }

    /// Sends `req` to the object and returns its response. A 101 response
    /// carries the accepted socket for the edge.
    pub async fn fetch(&self, req: Request) -> Result<Response, Error> {
        let outcome = self.client.fetch(self.key.clone(), req).await?;
        let mut response = outcome.response;
        if let Some(link) = outcome.socket {
            response
                .extensions_mut()
                .insert(UpgradeLink(Arc::new(Mutex::new(Some(link)))));
        }
        Ok(response)
    }

    /// Calls the object's `call` handler with `method` and `payload`.
    /// `Ok(Err(_))` is the handler's own error.
    pub async fn call(&self, method: &str, payload: Bytes) -> Result<CallResult, Error> {
        self.client
            .call(self.key.clone(), method.to_owned(), payload)
            .await
    }
}
