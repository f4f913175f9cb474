//! The dependency graph of `after`: every dependency names a pool, there is no cycle, and
//! [`Manifest::plan`] orders the pools into start waves.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use super::walk::{quote, Checked, Checker};
use super::{Manifest, Pool};

impl Manifest {
    /// The start plan: pools in dependency order, grouped into waves that can start together.
    ///
    /// A pool's wave comes after the waves of every pool it is `after`; within a wave, pools
    /// are in file order. (A checked manifest has no cycles; if one was built by hand with a
    /// cycle, the pools on or behind it make up a last wave.)
    pub fn plan(&self) -> Vec<Vec<&Pool>> {
        let mut waves: Vec<Vec<&Pool>> = Vec::new();
        let mut placed: HashSet<&str> = HashSet::new();
        let known: Vec<&str> = self.pools.iter().map(|pool| pool.name.as_str()).collect();
        let mut remaining: Vec<&Pool> = self.pools.iter().collect();
        while !remaining.is_empty() {
            // `placed` holds the pools of earlier waves only.
            let (ready, blocked): (Vec<&Pool>, Vec<&Pool>) = remaining.iter().partition(|pool| {
                pool.after.iter().all(|(dependency, _)| {
                    placed.contains(dependency.as_str()) || !known.contains(&dependency.as_str())
                })
            });
            if ready.is_empty() {
                waves.push(blocked);
                break;
            }
            placed.extend(ready.iter().map(|pool| pool.name.as_str()));
            waves.push(ready);
            remaining = blocked;
        }
        waves
    }
}

/// What is wrong with the pools' `after` edges: the first problem, in pool order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum GraphProblem {
    /// Edge `edge` of pool `pool` names no pool.
    Unknown { pool: usize, edge: usize },
    /// Edge `edge` of pool `pool` closes `cycle` (pool indices, first and last the same).
    Cycle {
        pool: usize,
        edge: usize,
        cycle: Vec<usize>,
    },
}

impl GraphProblem {
    /// The pool and the edge at fault.
    pub(super) fn edge(&self) -> (usize, usize) {
        match self {
            GraphProblem::Unknown { pool, edge } | GraphProblem::Cycle { pool, edge, .. } => (*pool, *edge),
        }
    }

    /// What is wrong, on one line.
    pub(super) fn message(&self, pools: &[Pool]) -> String {
        match self {
            GraphProblem::Unknown { pool, edge } => {
                let names: Vec<&str> = pools.iter().map(|pool| pool.name.as_str()).collect();
                format!(
                    "[pool.{}] is after unknown pool {}; pools: {}",
                    pools[*pool].name,
                    quote(&pools[*pool].after[*edge].0),
                    names.join(", ")
                )
            }
            GraphProblem::Cycle { cycle, .. } => {
                let names: Vec<&str> = cycle.iter().map(|&n| pools[n].name.as_str()).collect();
                format!("cycle in `after`: {}", names.join(" -> "))
            }
        }
    }
}

/// Every `after` names a pool, and `after` has no cycle; else the first problem.
pub(super) fn check_graph(pools: &[Pool]) -> Option<GraphProblem> {
    let index: HashMap<&str, usize> = pools
        .iter()
        .enumerate()
        .map(|(i, pool)| (pool.name.as_str(), i))
        .collect();
    for (node, pool) in pools.iter().enumerate() {
        if let Some(edge) = pool
            .after
            .iter()
            .position(|(dependency, _)| !index.contains_key(dependency.as_str()))
        {
            return Some(GraphProblem::Unknown { pool: node, edge });
        }
    }
    // Depth-first search in file order; a dependency still on the stack closes a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnStack,
        Done,
    }
    struct Search<'p> {
        pools: &'p [Pool],
        index: &'p HashMap<&'p str, usize>,
        marks: Vec<Mark>,
        stack: Vec<usize>,
    }
    impl Search<'_> {
        /// The first cycle found from `node`.
        fn visit(&mut self, node: usize) -> Option<GraphProblem> {
            self.marks[node] = Mark::OnStack;
            self.stack.push(node);
            for (edge, (dependency, _)) in self.pools[node].after.iter().enumerate() {
                let next = self.index[dependency.as_str()];
                match self.marks[next] {
                    Mark::Done => {}
                    Mark::OnStack => {
                        let from = self.stack.iter().position(|&n| n == next).unwrap_or(0);
                        let mut cycle = self.stack[from..].to_vec();
                        cycle.push(next);
                        return Some(GraphProblem::Cycle {
                            pool: node,
                            edge,
                            cycle,
                        });
                    }
                    Mark::New => {
                        if let Some(found) = self.visit(next) {
                            return Some(found);
                        }
                    }
                }
            }
            self.stack.pop();
            self.marks[node] = Mark::Done;
            None
        }
    }
    let mut search = Search {
        pools,
        index: &index,
        marks: vec![Mark::New; pools.len()],
        stack: Vec::new(),
    };
    for start in 0..pools.len() {
        if search.marks[start] != Mark::New {
            continue;
        }
        if let Some(found) = search.visit(start) {
            return Some(found);
        }
    }
    None
}

impl Checker<'_> {
    /// Every `after` names a pool, and `after` has no cycle.
    pub(super) fn check_after(&self, pools: &[Pool], after_spans: &[Vec<Range<usize>>]) -> Checked<()> {
        match check_graph(pools) {
            None => Ok(()),
            Some(problem) => {
                let (pool, edge) = problem.edge();
                Err(self.error(after_spans[pool][edge].clone(), problem.message(pools)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::manifest::testing::{accepted, refused, web};
    use crate::manifest::{Condition, Manifest};

    #[test]
    fn a_cycle_in_after_is_refused_naming_the_cycle() {
        let text = "[pool.a]\ncommand = [\"a\"]\nafter = { b = \"ready\" }\n\n[pool.b]\ncommand = [\"b\"]\nafter = { a = \"started\" }\n";
        refused(text, 7, 11, &["cycle in `after`: a -> b -> a"]);
    }

    #[test]
    fn a_longer_cycle_is_named_from_where_it_closes() {
        let text = "[pool.x]\ncommand = [\"x\"]\nafter.a = \"ready\"\n[pool.a]\ncommand = [\"a\"]\nafter.b = \"ready\"\n\
                    [pool.b]\ncommand = [\"b\"]\nafter.c = \"ready\"\n[pool.c]\ncommand = [\"c\"]\nafter.a = \"completed\"\n";
        refused(text, 12, 7, &["cycle in `after`: a -> b -> c -> a"]);
    }

    #[test]
    fn a_pool_after_itself_is_a_cycle() {
        refused(
            &web("after = { web = \"ready\" }"),
            3,
            11,
            &["cycle in `after`: web -> web"],
        );
    }

    #[test]
    fn an_unknown_pool_in_after_is_refused() {
        refused(
            "[pool.db]\ncommand = [\"db\"]\n[pool.web]\ncommand = [\"w\"]\nafter = { dbx = \"ready\" }\n",
            5,
            11,
            &["[pool.web] is after unknown pool `dbx`", "pools: db, web"],
        );
    }

    #[test]
    fn after_keeps_file_order() {
        let manifest = accepted(
            "[pool.b]\ncommand = [\"b\"]\n[pool.a]\ncommand = [\"a\"]\n\
             [pool.c]\ncommand = [\"c\"]\nafter = { b = \"completed\", a = \"started\" }\n",
        );
        assert_eq!(
            manifest.pools[2].after,
            [("b".into(), Condition::Completed), ("a".into(), Condition::Started)]
        );
    }

    fn plan_names(manifest: &Manifest) -> Vec<Vec<&str>> {
        manifest
            .plan()
            .iter()
            .map(|wave| wave.iter().map(|pool| pool.name.as_str()).collect())
            .collect()
    }

    #[test]
    fn a_pool_after_two_independent_pools_starts_in_the_second_wave() {
        let manifest = accepted(
            "[pool.Z]\ncommand = [\"z\"]\nafter = { X = \"completed\", Y = \"completed\" }\n\
             [pool.X]\ncommand = [\"x\"]\n[pool.Y]\ncommand = [\"y\"]\n",
        );
        assert_eq!(plan_names(&manifest), [vec!["X", "Y"], vec!["Z"]]);
    }

    #[test]
    fn a_chain_of_dependencies_gives_one_wave_per_link() {
        let manifest = accepted(
            "[pool.web]\ncommand = [\"w\"]\nafter = { cache = \"ready\", db = \"ready\" }\n\
             [pool.cache]\ncommand = [\"c\"]\nafter = { db = \"started\" }\n\
             [pool.db]\ncommand = [\"d\"]\n[pool.metrics]\ncommand = [\"m\"]\n",
        );
        assert_eq!(
            plan_names(&manifest),
            [vec!["db", "metrics"], vec!["cache"], vec!["web"]]
        );
    }

    #[test]
    fn plan_of_a_hand_built_cycle_ends_with_the_stuck_pools() {
        let mut manifest =
            accepted("[pool.a]\ncommand = [\"a\"]\n[pool.b]\ncommand = [\"b\"]\n[pool.c]\ncommand = [\"c\"]\n");
        manifest.pools[0].after.push(("b".into(), Condition::Ready));
        manifest.pools[1].after.push(("a".into(), Condition::Ready));
        assert_eq!(plan_names(&manifest), [vec!["c"], vec!["a", "b"]]);
    }
}
