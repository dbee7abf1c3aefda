//! Resources widened to i128 per dimension: sums of any number of i64 values fit, so
//! unvalidated input can neither overflow nor panic the scheduler's arithmetic.

use crate::domain::resources::Resources;

/// Resources widened to i128 per dimension.
pub(super) type Wide = [i128; 3];

pub(super) const ZERO_WIDE: Wide = [0; 3];

pub(super) fn wide(r: &Resources) -> Wide {
    r.dims().map(i128::from)
}

pub(super) fn add(a: Wide, b: Wide) -> Wide {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

pub(super) fn sub(a: Wide, b: Wide) -> Wide {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

pub(super) fn fits(need: Wide, room: Wide) -> bool {
    need.iter().zip(room.iter()).all(|(n, r)| n <= r)
}
