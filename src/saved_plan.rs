//! Saved plans: `plan --out FILE` writes what `up` would do, `up --plan FILE`
//! applies exactly that or nothing.
//!
//! A plan is made from the same opening reads that `up` starts with, so the
//! `up` that applies it compares like with like: it refuses, before its
//! first change, when the state file, the settings or the live stack (any
//! resource's action or differing fields) moved since the plan was made.
//! It holds no secret: drift of a secret names no value.

use crate::engine::resource::Drift;
use crate::engine::state::State;
use crate::engine::{Action, Entry};
use crate::settings::Recorded;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SavedPlan {
    pub format_version: u32,
    pub stack: String,
    pub region: String,
    pub account: String,
    /// The state file the plan was made from (`None`: there was none).
    pub state: Option<StateMark>,
    /// The settings recorded when the plan was made, and those it applies.
    pub recorded_before: Recorded,
    pub settings: Recorded,
    pub resources: Vec<Step>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StateMark {
    pub lineage: String,
    pub serial: u64,
}

impl StateMark {
    pub fn of(s: &State) -> Self {
        Self {
            lineage: s.lineage.clone(),
            serial: s.serial,
        }
    }
}

/// One resource's part of the plan.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub id: String,
    pub action: Action,
    #[serde(default)]
    pub drift: Vec<Drift>,
}

pub fn steps(preview: &[Entry]) -> Vec<Step> {
    preview
        .iter()
        .map(|e| Step {
            id: e.id.clone(),
            action: e.action.clone(),
            drift: e.drift.clone(),
        })
        .collect()
}

impl SavedPlan {
    pub fn new(
        stack: &str,
        region: &str,
        account: &str,
        state: Option<StateMark>,
        recorded_before: Recorded,
        settings: Recorded,
        preview: &[Entry],
    ) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            stack: stack.into(),
            region: region.into(),
            account: account.into(),
            state,
            recorded_before,
            settings,
            resources: steps(preview),
        }
    }

    pub fn load(path: &Path, suffix: &str) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read plan file {}", path.display()))?;
        let plan: SavedPlan = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "plan file {} is not a webhook-deploy plan ({e}); make one with `webhook-deploy plan --out FILE`",
                path.display()
            )
        })?;
        if plan.format_version != FORMAT_VERSION {
            bail!(
                "plan file {} has format version {}, which this webhook-deploy does not apply ({FORMAT_VERSION}); make a new plan",
                path.display(),
                plan.format_version
            );
        }
        if plan.stack != suffix {
            bail!(
                "plan file {} is for stack '{}', not '{suffix}'; pass --suffix {} or make a plan for this stack",
                path.display(),
                plan.stack,
                plan.stack
            );
        }
        Ok(plan)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_vec_pretty(self)?;
        text.push(b'\n');
        crate::engine::state::write_atomic(path, &text, None)
    }

    /// Refuses the plan when what it was made from has moved: `what` is
    /// the part compared, `now` its value now.
    pub fn check<T: PartialEq + std::fmt::Debug>(
        &self,
        path: &Path,
        what: &str,
        then: &T,
        now: &T,
    ) -> Result<()> {
        if then != now {
            bail!(
                "{what} changed since plan {} was made ({then:?} then, {now:?} now): nothing was changed; make a new plan with `webhook-deploy plan --out FILE`",
                path.display()
            );
        }
        Ok(())
    }

    /// Refuses the plan when the live stack no longer gives the same steps,
    /// naming the first resource that differs.
    pub fn check_steps(&self, path: &Path, preview: &[Entry]) -> Result<()> {
        let now = steps(preview);
        if now == self.resources {
            return Ok(());
        }
        let first = now
            .iter()
            .zip(&self.resources)
            .find(|(a, b)| a != b)
            .map(|(a, _)| a.id.clone())
            .unwrap_or_else(|| "the list of resources".into());
        bail!(
            "the stack changed since plan {} was made ({first} differs): nothing was changed; make a new plan with `webhook-deploy plan --out FILE`",
            path.display()
        );
    }
}

/// Whether the plan changes anything.
pub fn changes(preview: &[Entry]) -> bool {
    preview
        .iter()
        .any(|e| !matches!(e.action, Action::NoChange | Action::Absent))
}
