//! Workers: the stateless request handlers in front of objects (Cloudflare's
//! Worker with its `env`), and the stubs they call objects through.

use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::Error;
use super::client::{CallResult, ObjectClient};
use super::http::{Request, Response};
use super::socket::SocketLink;
use crate::id::{self, ObjectId, ObjectKey};

/// A stateless handler that routes requests to objects (the seed's router).
pub trait Worker: Send + Sync + 'static {
    fn fetch(&self, req: Request, env: &Env) -> impl Future<Output = Response> + Send;
}

/// What a worker can reach: the object namespaces (bindings).
#[derive(Clone)]
pub struct Env {
    client: Arc<dyn ObjectClient>,
    namespaces: Arc<[Arc<str>]>,
}

impl Env {
    pub fn new(client: Arc<dyn ObjectClient>, namespaces: Vec<Arc<str>>) -> Self {
        Env {
            client,
            namespaces: namespaces.into(),
        }
    }

    /// The namespace bound as `binding`.
    pub fn namespace(&self, binding: &str) -> Result<Namespace, Error> {
        let name = self
            .namespaces
            .iter()
            .find(|n| &***n == binding)
            .ok_or_else(|| Error::UnknownNamespace(binding.to_owned()))?;
        Ok(Namespace {
            name: name.clone(),
            client: self.client.clone(),
        })
    }
}

/// One class's objects (Cloudflare's `DurableObjectNamespace`).
#[derive(Clone)]
pub struct Namespace {
    name: Arc<str>,
    client: Arc<dyn ObjectClient>,
}

impl Namespace {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id_from_name(&self, name: &str) -> ObjectId {
        ObjectId::from_name(&self.name, name)
    }

    pub fn new_unique_id(&self) -> ObjectId {
        ObjectId::new_unique()
    }

    pub fn id_from_string(&self, s: &str) -> Result<ObjectId, id::Error> {
        ObjectId::parse(s)
    }

    /// A stub to call the object with `id`.
    pub fn get(&self, id: ObjectId) -> Stub {
        Stub {
            key: ObjectKey::new(self.name.clone(), id),
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
