//! The bridge for filter nodes with no native DataFusion translation: a scalar UDF that
//! rebuilds each row's LogEntry from the flat columns (`batch_to_log_entries`) and runs the
//! JSON evaluator of `verdict-filter` on that one node. Exact by construction (it *is* the
//! reference evaluator), slower than native expressions: the translator uses it only for the
//! constructs listed in [`crate::translate`], and combined with native conjuncts.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use verdict_filter::Filter;
use verdict_filter::ast::Expr;

/// One filter node evaluated over rebuilt LogEntries. Arguments: every column of the flat
/// `policy_action` schema, in schema order.
#[derive(Debug)]
pub struct JsonFallback {
    filter: Filter,
    node_text: String,
    schema: SchemaRef,
    signature: Signature,
}

impl JsonFallback {
    /// `node` is a node of the tree of a query whose text is `text`.
    pub fn new(node: &Expr, text: &str) -> crate::Result<JsonFallback> {
        let span = match node {
            Expr::Compare(c) => Some(c.span),
            Expr::Exists(x) => Some(x.span),
            Expr::Global(v) => Some(v.span),
            Expr::Call(c) => Some(c.span()),
            Expr::And(_) | Expr::Or(_) | Expr::Not(_) => None,
        };
        let node_text = span.map_or_else(|| text.to_owned(), |s| s.text(text).to_owned());
        Ok(JsonFallback {
            filter: Filter::from_expr(node, text)?,
            node_text,
            schema: verdict_schema::flat_schema::log_entry_schema(),
            signature: Signature::variadic_any(Volatility::Immutable),
        })
    }

    /// The query text of the node.
    pub fn node_text(&self) -> &str {
        &self.node_text
    }

    fn evaluate(&self, columns: Vec<ArrayRef>) -> DfResult<BooleanArray> {
        let fields = self.schema.fields();
        if columns.len() != fields.len() {
            return Err(DataFusionError::Internal(format!(
                "logging_filter expects the {} columns of policy_action, got {}",
                fields.len(),
                columns.len()
            )));
        }
        // Scans may hand over other encodings of the same values (e.g. plain strings for a
        // dictionary column); the row conversion wants the stored types.
        let batch = crate::lake::batch_in_types(columns, &self.schema)?;
        let entries = verdict_schema::flat_schema::batch_to_log_entries(&batch)?;
        let mut out = Vec::with_capacity(entries.len());
        for entry in &entries {
            let json =
                serde_json::to_value(entry).map_err(|e| DataFusionError::External(Box::new(e)))?;
            out.push(self.filter.matches(&json));
        }
        Ok(BooleanArray::from(out))
    }
}

impl PartialEq for JsonFallback {
    fn eq(&self, other: &Self) -> bool {
        self.node_text == other.node_text && self.filter.text() == other.filter.text()
    }
}

impl Eq for JsonFallback {}

impl Hash for JsonFallback {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.node_text.hash(state);
        self.filter.text().hash(state);
    }
}

impl ScalarUDFImpl for JsonFallback {
    fn name(&self) -> &str {
        "logging_filter"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let columns = ColumnarValue::values_to_arrays(&args.args)?;
        let result = self.evaluate(columns)?;
        debug_assert_eq!(result.len(), args.number_rows);
        Ok(ColumnarValue::Array(Arc::new(result)))
    }
}
