//! Placement: which connected agent runs an admitted deployment.
//!
//! Admission (the rest of this folder) treats a cluster's capacity as a quota. Placement then
//! hands each admitted deployment to one agent whose free room fits it, so that no machine is
//! ever asked to run more than it has. An agent's room is its capacity minus everything placed
//! on it that has not confirmed its exit: the container of a stopped or preempted deployment
//! still occupies its agent until the agent reports it gone, which is what makes a preemptor
//! wait for its victims' containers.
//!
//! The choice is best fit (Nomad's default, `binpack`): the agent left with the least room
//! after taking the deployment, so large requests still find a whole machine later.

use crate::domain::ids::{AgentId, DeploymentId};
use crate::domain::resources::Resources;

/// One connected agent as placement sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    pub agent: AgentId,
    /// What the agent said it has.
    pub capacity: Resources,
    /// Placed on it and not yet confirmed gone.
    pub occupied: Resources,
}

impl Room {
    /// What is still free (never negative: an agent that came back smaller has none).
    pub fn free(&self) -> Resources {
        let f = self.capacity.saturating_sub(&self.occupied);
        Resources::new(f.cpu_millis.max(0), f.memory_mib.max(0), f.gpus.max(0))
    }

    /// Whether `request` fits in what is free (a dimension it does not ask for may be
    /// over-full).
    pub fn fits(&self, request: &Resources) -> bool {
        request.fits_within(&self.free())
    }

    /// How full it would be with `request` too: the largest share of any dimension it has,
    /// from 0 (empty) to 1 (full). Dimensions it has none of do not count.
    fn fullness_with(&self, request: &Resources) -> f64 {
        let after = self.occupied.saturating_add(request);
        after
            .dims()
            .iter()
            .zip(self.capacity.dims())
            .filter(|(_, cap)| *cap > 0)
            .map(|(used, cap)| *used as f64 / cap as f64)
            .fold(0.0, f64::max)
    }
}

/// Places each of `waiting` (in the order given: admission order) on the best-fitting agent
/// of `rooms` that has room for it, and counts it there. Answers the placements; what fits
/// no agent is left out and keeps waiting for one.
pub fn place(
    rooms: &mut [Room],
    waiting: impl IntoIterator<Item = (DeploymentId, Resources)>,
) -> Vec<(DeploymentId, AgentId)> {
    let mut placed = Vec::new();
    for (deployment, request) in waiting {
        let best = rooms
            .iter_mut()
            .filter(|r| r.fits(&request))
            .min_by(|a, b| {
                b.fullness_with(&request)
                    .total_cmp(&a.fullness_with(&request))
                    .then(a.agent.0.cmp(&b.agent.0))
            });
        if let Some(room) = best {
            room.occupied = room.occupied.saturating_add(&request);
            placed.push((deployment, room.agent));
        }
    }
    placed
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use uuid::Uuid;

    fn agent(n: u128) -> AgentId {
        AgentId(Uuid::from_u128(n))
    }

    fn deployment(n: u128) -> DeploymentId {
        DeploymentId(Uuid::from_u128(n))
    }

    fn room(n: u128, cpu: i64, mem: i64, gpus: i64) -> Room {
        Room {
            agent: agent(n),
            capacity: Resources::new(cpu, mem, gpus),
            occupied: Resources::ZERO,
        }
    }

    #[test]
    fn best_fit_fills_the_fuller_machine_first() {
        let mut rooms = [room(1, 8000, 32768, 0), room(2, 4000, 16384, 0)];
        let got = place(
            &mut rooms,
            [
                (deployment(10), Resources::new(2000, 4096, 0)),
                (deployment(11), Resources::new(2000, 4096, 0)),
                (deployment(12), Resources::new(6000, 8192, 0)),
            ],
        );
        // The first two go to the small machine (fuller after), leaving the big one whole
        // for the large request.
        assert_eq!(
            got,
            vec![
                (deployment(10), agent(2)),
                (deployment(11), agent(2)),
                (deployment(12), agent(1)),
            ]
        );
    }

    #[test]
    fn what_fits_nowhere_waits_and_does_not_block_what_fits() {
        let mut rooms = [room(1, 1000, 1024, 0)];
        let got = place(
            &mut rooms,
            [
                (deployment(1), Resources::new(0, 0, 1)),
                (deployment(2), Resources::new(500, 512, 0)),
            ],
        );
        assert_eq!(got, vec![(deployment(2), agent(1))]);
    }

    #[test]
    fn unconfirmed_exits_still_occupy_their_agent() {
        let mut rooms = [Room {
            occupied: Resources::new(1000, 0, 1),
            ..room(1, 1000, 1024, 1)
        }];
        assert!(place(&mut rooms, [(deployment(1), Resources::new(0, 0, 1))]).is_empty());
        rooms[0].occupied = Resources::ZERO; // the victim's container is gone
        assert_eq!(
            place(&mut rooms, [(deployment(1), Resources::new(0, 0, 1))]),
            vec![(deployment(1), agent(1))]
        );
    }

    #[test]
    fn an_agent_that_came_back_smaller_has_no_room_and_no_negative_free() {
        let r = Room {
            occupied: Resources::new(4000, 0, 0),
            ..room(1, 2000, 1024, 0)
        };
        assert_eq!(r.free(), Resources::new(0, 1024, 0));
        assert!(!r.fits(&Resources::new(1, 0, 0)));
        assert!(r.fits(&Resources::new(0, 1024, 0)));
    }

    fn resources() -> impl Strategy<Value = Resources> {
        (0..9000i64, 0..9000i64, 0..3i64).prop_map(|(c, m, g)| Resources::new(c, m, g))
    }

    proptest! {
        /// No agent is ever given more than its capacity, nothing is placed twice, and what
        /// stays unplaced fits no agent's remaining room.
        #[test]
        fn never_overcommits_and_leaves_only_what_fits_nowhere(
            caps in prop::collection::vec(resources(), 0..6),
            asks in prop::collection::vec(resources(), 0..40),
        ) {
            let mut rooms: Vec<Room> = caps
                .iter()
                .enumerate()
                .map(|(i, c)| Room { agent: agent(i as u128), capacity: *c, occupied: Resources::ZERO })
                .collect();
            let waiting: Vec<_> = asks.iter().enumerate().map(|(i, r)| (deployment(i as u128), *r)).collect();
            let placed = place(&mut rooms, waiting.clone());
            let mut seen = std::collections::HashSet::new();
            for (d, _) in &placed {
                prop_assert!(seen.insert(*d), "placed twice");
            }
            for room in &rooms {
                let on_it: Vec<Resources> = placed
                    .iter()
                    .filter(|(_, a)| *a == room.agent)
                    .map(|(d, _)| waiting[d.0.as_u128() as usize].1)
                    .collect();
                let sum = Resources::sum(on_it.iter());
                prop_assert_eq!(sum, room.occupied);
                prop_assert!(sum.fits_within(&room.capacity), "overcommitted");
            }
            for (d, r) in &waiting {
                if !seen.contains(d) {
                    prop_assert!(rooms.iter().all(|room| !room.fits(r)), "left out but fits");
                }
            }
        }
    }
}
