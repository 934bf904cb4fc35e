//! [`TierView`]: a slice of members seen as [`Candidates`].

use crate::balancer::Candidates;
use crate::load::Load;
use crate::member::Member;

/// Members as a balancer sees them: eligible unless a layer refuses.
pub(crate) struct TierView<'a, S> {
    members: &'a [Member<S>],
    streaming: bool,
}

impl<'a, S> TierView<'a, S> {
    pub(crate) fn new(members: &'a [Member<S>], streaming: bool) -> Self {
        TierView { members, streaming }
    }
}

impl<S> Candidates for TierView<'_, S> {
    fn len(&self) -> usize {
        self.members.len()
    }

    fn eligible(&self, i: usize) -> bool {
        self.members[i].admission.refusing().is_none()
    }

    fn load(&self, i: usize) -> &Load {
        &self.members[i].load
    }

    fn headroom(&self, i: usize) -> Option<f64> {
        self.members[i].admission.headroom()
    }

    fn streaming(&self) -> bool {
        self.streaming
    }
}
