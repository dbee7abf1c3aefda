//! The book's parts: the hasher of its id maps, what its trees store beside their keys with
//! their subtree summaries, tree weights and aging steps.

use std::hash::{BuildHasherDefault, Hasher};

use chrono::{DateTime, TimeDelta, Utc};

use super::super::model::{DeploymentId, AGING_MAX_BOOST, AGING_STEP_SECONDS};
use super::super::wide::{add, wide, Wide, ZERO_WIDE};
use crate::collections::treap::{Measured, Summary};
use crate::domain::resources::Resources;

/// The hasher of the book's id maps: a fixed multiply-and-fold (FxHash's) with a final mix,
/// so the book draws no random numbers, and fast on 16-byte ids. Deployment ids are made by
/// the engine (UUIDv7, random low bits), not chosen by callers, so a fixed function is not an
/// attack surface; and no result depends on the maps' iteration order.
#[derive(Default, Clone, Copy)]
pub(super) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        // The multiply only carries low bits upwards; ids that differ in their high bytes
        // (sequential ones, big-endian) need a final mix (MurmurHash3's fmix64) to spread
        // into the low bits the table indexes by.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

pub(super) type Fixed = BuildHasherDefault<IdHasher>;

/// What the queue tree stores beside the key.
#[derive(Debug, Clone, Copy)]
pub(super) struct Waiting {
    pub(super) priority: i32,
    pub(super) resources: Resources,
}

/// Queue subtree summary: what its smallest request could be, and its highest base priority.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Smallest {
    /// Component-wise minimum of the valid requests (`i64::MAX` standing for "none").
    pub(super) request: [i64; 3],
    pub(super) top_priority: i32,
}

impl Summary for Smallest {
    const EMPTY: Self = Smallest {
        request: [i64::MAX; 3],
        top_priority: i32::MIN,
    };
    fn join(&self, right: &Self) -> Self {
        let [a, b, c] = self.request;
        let [x, y, z] = right.request;
        Smallest {
            request: [a.min(x), b.min(y), c.min(z)],
            top_priority: self.top_priority.max(right.top_priority),
        }
    }
}

impl Measured for Waiting {
    type Summary = Smallest;
    fn measure(&self) -> Smallest {
        Smallest {
            // An invalid request never fits; it must not make a subtree look promising.
            request: if self.resources.is_valid() {
                self.resources.dims()
            } else {
                [i64::MAX; 3]
            },
            top_priority: self.priority,
        }
    }
}

/// What the running tree stores beside the key.
#[derive(Debug, Clone, Copy)]
pub(super) struct Holding {
    pub(super) resources: Resources,
    /// To return to the queue with, if preempted.
    pub(super) enqueued_at: DateTime<Utc>,
}

/// Running subtree summary: the resources it holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Held(pub(super) Wide);

impl Summary for Held {
    const EMPTY: Self = Held(ZERO_WIDE);
    fn join(&self, right: &Self) -> Self {
        Held(add(self.0, right.0))
    }
}

impl Measured for Holding {
    type Summary = Held;
    fn measure(&self) -> Held {
        Held(wide(&self.resources))
    }
}

/// What the id map keeps of every deployment: with `as_of` (queued) or the admission time
/// (running), enough to rebuild its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Known {
    pub(super) priority: i32,
    pub(super) enqueued_at: DateTime<Utc>,
}

/// Heap weight of a deployment in both trees: a hash of its id (splitmix64's finaliser over
/// both halves), independent of scheduling order and the same on every machine.
pub(super) fn weight(id: &DeploymentId) -> u64 {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let (hi, lo) = id.0.as_u64_pair();
    mix(hi ^ mix(lo))
}

/// The instant an entry whose boost is `boost` gains the next point, if it ever does.
pub(super) fn next_step(enqueued_at: DateTime<Utc>, boost: i32) -> Option<DateTime<Utc>> {
    if boost >= AGING_MAX_BOOST {
        return None;
    }
    // The boost is floor(whole seconds waited / step), so the next point comes exactly
    // (boost + 1) steps after enqueueing; an instant beyond the calendar never comes.
    let wait = TimeDelta::try_seconds(AGING_STEP_SECONDS * i64::from(boost + 1))?;
    enqueued_at.checked_add_signed(wait)
}

/// Clamps a wide sum back into a resource value (sums of valid values never need it).
pub(super) fn narrow(w: Wide) -> Resources {
    let clamp = |x: i128| i64::try_from(x).unwrap_or(if x < 0 { i64::MIN } else { i64::MAX });
    Resources::new(clamp(w[0]), clamp(w[1]), clamp(w[2]))
}

pub(super) fn widen(dims: [i64; 3]) -> Wide {
    dims.map(i128::from)
}

pub(super) fn negative(r: &Resources) -> bool {
    r.dims().iter().any(|&x| x < 0)
}
