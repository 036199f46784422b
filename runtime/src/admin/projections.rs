//! The registered projections, behind one object-safe trait so projections of different
//! types sit in one list: each entry makes a fresh projection value when a command needs
//! one.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use crate::error::ProjectionError;
use crate::projection::{Progress, Projection, ProjectionRunner};
use crate::store::TxStore;

use super::AdminStore;

pub(super) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the admin does with one registered projection.
pub(super) trait Entry<S: AdminStore>: Send + Sync {
    fn name(&self) -> &'static str;

    /// Empties the read model, sets the checkpoint to 0 and replays every event.
    fn rebuild<'a>(
        &'a self,
        store: &'a S,
        batch_size: usize,
        progress: Box<dyn FnMut(Progress) + Send + 'a>,
    ) -> BoxFuture<'a, Result<Progress, ProjectionError>>;

    /// Empties the read model and sets the checkpoint to 0, in one transaction; returns
    /// the checkpoint it had.
    fn reset<'a>(&'a self, store: &'a S) -> BoxFuture<'a, Result<u64, ProjectionError>>;

    /// Hands parked event `id` to the handler again.
    fn retry_parked<'a>(
        &'a self,
        store: &'a S,
        id: u64,
    ) -> BoxFuture<'a, Result<(), ProjectionError>>;
}

/// A projection registered with the factory that makes it.
pub(super) struct Registered<P, F> {
    make: F,
    projection: PhantomData<fn() -> P>,
}

impl<P, F> Registered<P, F> {
    pub(super) fn new(make: F) -> Self {
        Registered {
            make,
            projection: PhantomData,
        }
    }
}

impl<S, P, F> Entry<S> for Registered<P, F>
where
    S: AdminStore,
    P: Projection<<S as TxStore>::Tx>,
    F: Fn() -> P + Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn rebuild<'a>(
        &'a self,
        store: &'a S,
        batch_size: usize,
        progress: Box<dyn FnMut(Progress) + Send + 'a>,
    ) -> BoxFuture<'a, Result<Progress, ProjectionError>> {
        Box::pin(async move {
            let mut runner =
                ProjectionRunner::new(store.clone(), (self.make)()).batch_size(batch_size);
            runner.rebuild(progress).await
        })
    }

    fn reset<'a>(&'a self, store: &'a S) -> BoxFuture<'a, Result<u64, ProjectionError>> {
        Box::pin(async move {
            let mut runner = ProjectionRunner::new(store.clone(), (self.make)());
            runner.reset().await
        })
    }

    fn retry_parked<'a>(
        &'a self,
        store: &'a S,
        id: u64,
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            let mut runner = ProjectionRunner::new(store.clone(), (self.make)());
            runner.retry_parked(id).await
        })
    }
}
