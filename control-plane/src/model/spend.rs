//! The spend row: a filter's record with its price, as spooled, drained, stored and read back.

use livegate_contract::spend::SpendRecord;
use serde::{Deserialize, Serialize};

/// A record as spooled and drained: what the filter reported, with its price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    #[serde(flatten)]
    pub record: SpendRecord,
    /// USD; 0 when usage is unknown or the model has no price.
    pub cost: f64,
    /// The model (returned, else requested) is not in the price table.
    pub unpriced: bool,
    /// The user the key named when the record was taken (from this replica's key cache):
    /// its cost counts in that user's pending spend until drained. The drain adds the cost
    /// to the user the key names in Postgres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}
