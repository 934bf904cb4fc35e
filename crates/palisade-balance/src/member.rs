//! [`Member`]: one provider of a balanced tier.

use std::fmt;
use std::sync::Arc;

use palisade_core::{Admission, Admissions, ProviderId};

use crate::load::Load;

/// One provider of a [`Balance`](crate::Balance): its id, service, weight,
/// the admission views of its layers, and its [`Load`].
///
/// ```
/// use palisade_balance::Member;
/// use tower::service_fn;
///
/// let m = Member::new("azure-east", service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) })).weight(3);
/// assert_eq!(m.id().as_str(), "azure-east");
/// assert_eq!(m.get_weight(), 3);
/// ```
pub struct Member<S> {
    pub(crate) id: ProviderId,
    pub(crate) svc: S,
    pub(crate) weight: u32,
    pub(crate) admission: Admissions,
    pub(crate) load: Arc<Load>,
}

impl<S> fmt::Debug for Member<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member")
            .field("id", &self.id)
            .field("weight", &self.weight)
            .field("in_flight", &self.load.in_flight())
            .finish()
    }
}

impl<S: Clone> Clone for Member<S> {
    fn clone(&self) -> Self {
        Member {
            id: self.id.clone(),
            svc: self.svc.clone(),
            weight: self.weight,
            admission: self.admission.clone(),
            load: self.load.clone(),
        }
    }
}

impl<S> Member<S> {
    /// Provider `id`, called through `svc`, weight 1.
    pub fn new(id: impl Into<ProviderId>, svc: S) -> Self {
        Member {
            id: id.into(),
            svc,
            weight: 1,
            admission: Admissions::default(),
            load: Arc::new(Load::default()),
        }
    }

    /// Its share of the traffic relative to the others (1 to
    /// [`MAX_WEIGHT`](crate::MAX_WEIGHT); checked when the balance is
    /// built).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// A layer of this provider's stack that can say "not now" (its
    /// breaker's, bulkhead's or rate limiter's handle): while it refuses,
    /// the provider is not picked.
    pub fn admission(mut self, view: impl Admission) -> Self {
        self.admission.push(view);
        self
    }

    /// Shares `load` with whoever else tracks this provider (so the
    /// balance sees calls made around it).
    pub fn load(mut self, load: Arc<Load>) -> Self {
        self.load = load;
        self
    }

    /// The provider's id.
    pub fn id(&self) -> &ProviderId {
        &self.id
    }

    /// The provider's weight.
    pub fn get_weight(&self) -> u32 {
        self.weight
    }

    /// The provider's load.
    pub fn get_load(&self) -> &Arc<Load> {
        &self.load
    }
}
