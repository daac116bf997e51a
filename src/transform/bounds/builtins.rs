//! The builtins the bound knows: each constant-size or linear in its input, none iterating.
//! Any other builtin leaves the program to a worker.
use super::scope::Scope;
use super::walk::{refuse, Ast, Bound, Walk, SMALL, TEXT_GROWTH};
use super::{Linear, Unbounded};

impl Walk {
    /// The builtins bounded here: constant-size or linear in their input, none iterating.
    pub(super) fn builtin<'a, 's>(
        &mut self,
        name: &'s str,
        args: &'a [Ast<'s>],
        scope: Scope<'a, 's>,
        input: Linear,
    ) -> Result<Bound, Unbounded> {
        let small = Linear::fixed(SMALL);
        let unit = Linear::fixed(1.0);
        match (name, args) {
            ("empty", []) => Ok(Bound::nothing(unit)),
            // Raises its input.
            ("error", []) => Ok(Bound::nothing(input)),
            ("error", [message]) => {
                let message = self.term(message, scope, input)?;
                Ok(Bound {
                    count: 0.0,
                    size: Linear::ZERO,
                    peak: message.peak,
                    work: message.work,
                })
            }
            ("null" | "true" | "false", []) => Ok(Bound::one(small, unit)),
            (
                "not" | "type" | "length" | "utf8bytelength" | "floor" | "ceil" | "round" | "fabs"
                | "sqrt",
                [],
            ) => Ok(Bound::one(small, input)),
            // A number parsed from a string keeps at most the string's digits.
            ("tonumber", []) => Ok(Bound::one(input.max(small), input)),
            ("tostring" | "tojson", []) => {
                let text = input.times(TEXT_GROWTH).plus(Linear::fixed(2.0));
                Ok(Bound::one(text, text))
            }
            ("ascii_downcase" | "ascii_upcase", []) => Ok(Bound::one(input, input)),
            // Type selectors: the input or nothing.
            (
                "values" | "nulls" | "booleans" | "numbers" | "strings" | "arrays" | "objects"
                | "iterables" | "scalars",
                [],
            ) => Ok(Bound::one(input, unit)),
            ("select", [condition]) => {
                let condition = self.term(condition, scope, input)?;
                Ok(Bound {
                    count: condition.count,
                    size: input,
                    peak: condition.peak.max(input),
                    work: condition.work,
                })
            }
            ("has" | "startswith" | "endswith" | "ltrimstr" | "rtrimstr", [arg]) => {
                let arg = self.term(arg, scope, input)?;
                let size = if name.ends_with("trimstr") {
                    input
                } else {
                    small
                };
                Ok(Bound {
                    count: arg.count,
                    size,
                    peak: arg.peak.max(size),
                    work: arg.work.plus(input.plus(arg.size).times(arg.count)),
                })
            }
            _ => refuse(format!(
                "`{name}/{}` is not among the builtins bounded here",
                args.len()
            )),
        }
    }
}
