//! Resource vectors (CPU, memory, GPUs) and the small amount of arithmetic the scheduler needs.
//!
//! Every quantity is an `i64` that must lie in `0..MAX_RESOURCE` when it describes a capacity or a
//! request. The bound keeps sums of millions of requests far away from `i64` overflow, so the
//! scheduler can add freely; the helpers still use checked or saturating arithmetic so that
//! unvalidated input can never cause a panic.

use serde::{Deserialize, Serialize};

/// Exclusive upper bound of every dimension of a valid [`Resources`] value (2^40).
///
/// 2^40 millicores or MiB is far beyond any real machine, and 2^23 (about 8 million) such values
/// still sum to less than `i64::MAX`.
pub const MAX_RESOURCE: i64 = 1 << 40;

/// An amount of compute: a capacity, a request, or (possibly negative) headroom.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
pub struct Resources {
    /// CPU in thousandths of a core.
    pub cpu_millis: i64,
    /// Memory in mebibytes.
    pub memory_mib: i64,
    /// Whole GPUs.
    pub gpus: i64,
}

impl Resources {
    /// No resources at all.
    pub const ZERO: Resources = Resources {
        cpu_millis: 0,
        memory_mib: 0,
        gpus: 0,
    };

    /// Builds a value from its three dimensions.
    pub const fn new(cpu_millis: i64, memory_mib: i64, gpus: i64) -> Self {
        Resources {
            cpu_millis,
            memory_mib,
            gpus,
        }
    }

    /// True when every dimension lies in `0..MAX_RESOURCE`, i.e. the value may be stored as a
    /// capacity or a request.
    pub fn is_valid(&self) -> bool {
        self.dims().iter().all(|&x| (0..MAX_RESOURCE).contains(&x))
    }

    /// True when every dimension of `self` is at most the same dimension of `other`.
    pub fn fits_within(&self, other: &Resources) -> bool {
        self.cpu_millis <= other.cpu_millis
            && self.memory_mib <= other.memory_mib
            && self.gpus <= other.gpus
    }

    /// Dimension-wise sum, or `None` if any dimension overflows `i64`.
    pub fn checked_add(&self, other: &Resources) -> Option<Resources> {
        Some(Resources {
            cpu_millis: self.cpu_millis.checked_add(other.cpu_millis)?,
            memory_mib: self.memory_mib.checked_add(other.memory_mib)?,
            gpus: self.gpus.checked_add(other.gpus)?,
        })
    }

    /// Dimension-wise sum, clamped to the `i64` range.
    pub fn saturating_add(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_mib: self.memory_mib.saturating_add(other.memory_mib),
            gpus: self.gpus.saturating_add(other.gpus),
        }
    }

    /// Dimension-wise difference, or `None` if any dimension would drop below zero (that is,
    /// `other` does not fit within `self`) or overflow.
    ///
    /// This mirrors unsigned subtraction: taking a request out of a free amount either succeeds
    /// or tells the caller that it did not fit.
    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        let sub = |a: i64, b: i64| a.checked_sub(b).filter(|d| *d >= 0);
        Some(Resources {
            cpu_millis: sub(self.cpu_millis, other.cpu_millis)?,
            memory_mib: sub(self.memory_mib, other.memory_mib)?,
            gpus: sub(self.gpus, other.gpus)?,
        })
    }

    /// Dimension-wise difference clamped to the `i64` range; unlike [`Resources::checked_sub`]
    /// the result may be negative.
    ///
    /// Negative headroom is meaningful: after a cluster shrinks, the running set may exceed the
    /// capacity, and nothing should be admitted until enough of it has gone.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_mib: self.memory_mib.saturating_sub(other.memory_mib),
            gpus: self.gpus.saturating_sub(other.gpus),
        }
    }

    /// True when every dimension is zero.
    pub fn is_zero(&self) -> bool {
        *self == Resources::ZERO
    }

    /// True when at least one dimension is strictly positive.
    pub fn any_positive(&self) -> bool {
        self.dims().iter().any(|&x| x > 0)
    }

    /// Saturating sum of many values; the identity is [`Resources::ZERO`].
    pub fn sum<'a, I>(items: I) -> Resources
    where
        I: IntoIterator<Item = &'a Resources>,
    {
        items
            .into_iter()
            .fold(Resources::ZERO, |acc, r| acc.saturating_add(r))
    }

    /// The three dimensions in a fixed order, for code that treats them uniformly.
    pub fn dims(&self) -> [i64; 3] {
        [self.cpu_millis, self.memory_mib, self.gpus]
    }

    /// Each dimension with its field name in the API, in [`Resources::dims`] order.
    pub fn named(&self) -> [(&'static str, i64); 3] {
        let [cpu, memory, gpus] = self.dims();
        [("cpu_millis", cpu), ("memory_mib", memory), ("gpus", gpus)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn r(c: i64, m: i64, g: i64) -> Resources {
        Resources::new(c, m, g)
    }

    #[test]
    fn zero_and_default_agree() {
        assert_eq!(Resources::default(), Resources::ZERO);
        assert!(Resources::ZERO.is_zero());
        assert!(!Resources::ZERO.any_positive());
        assert!(Resources::ZERO.is_valid());
    }

    #[test]
    fn validity_bounds() {
        assert!(r(MAX_RESOURCE - 1, 0, 0).is_valid());
        assert!(!r(MAX_RESOURCE, 0, 0).is_valid());
        assert!(!r(0, -1, 0).is_valid());
        assert!(!r(0, 0, i64::MAX).is_valid());
    }

    #[test]
    fn fits_within_needs_every_dimension() {
        let cap = r(1000, 2048, 1);
        assert!(r(1000, 2048, 1).fits_within(&cap));
        assert!(r(0, 0, 0).fits_within(&cap));
        assert!(!r(1001, 0, 0).fits_within(&cap));
        assert!(!r(0, 2049, 0).fits_within(&cap));
        assert!(!r(0, 0, 2).fits_within(&cap));
        // Negative headroom admits nothing that asks for that dimension.
        assert!(!r(0, 0, 0).fits_within(&r(-1, 10, 10)));
    }

    #[test]
    fn addition() {
        assert_eq!(r(1, 2, 3).checked_add(&r(10, 20, 30)), Some(r(11, 22, 33)));
        assert_eq!(r(i64::MAX, 0, 0).checked_add(&r(1, 0, 0)), None);
        assert_eq!(
            r(i64::MAX, 1, 0).saturating_add(&r(1, 1, 0)),
            r(i64::MAX, 2, 0)
        );
    }

    #[test]
    fn subtraction() {
        assert_eq!(r(10, 20, 3).checked_sub(&r(1, 20, 0)), Some(r(9, 0, 3)));
        assert_eq!(r(10, 20, 3).checked_sub(&r(11, 0, 0)), None);
        assert_eq!(r(10, 20, 3).checked_sub(&r(0, 0, 4)), None);
        assert_eq!(r(1, 1, 1).saturating_sub(&r(2, 0, 1)), r(-1, 1, 0));
        assert_eq!(
            r(i64::MIN, 0, 0).saturating_sub(&r(1, 0, 0)),
            r(i64::MIN, 0, 0)
        );
    }

    #[test]
    fn positivity() {
        assert!(r(0, 0, 1).any_positive());
        assert!(!r(0, -5, 0).any_positive());
        assert!(!r(0, -5, 0).is_zero());
    }

    #[test]
    fn sum_of_many_max_values_does_not_overflow() {
        let big = r(MAX_RESOURCE - 1, MAX_RESOURCE - 1, MAX_RESOURCE - 1);
        let items = vec![big; 1_000_000];
        let total = Resources::sum(&items);
        assert_eq!(total.cpu_millis, (MAX_RESOURCE - 1) * 1_000_000);
        assert_eq!(total.checked_add(&big), Some(total.saturating_add(&big)));
    }

    #[test]
    fn stays_serialisable() {
        // Compile-time guard: the type is stored and sent over the wire, so losing a serde
        // derive must break the build here rather than in a distant caller.
        fn assert_serde<T: Serialize + for<'de> Deserialize<'de>>() {}
        assert_serde::<Resources>();
    }
}
