//! The walk over a parsed program that bounds each term's outputs, sizes and work, or refuses.
use jaq_core::load::lex::StrPart;
use jaq_core::load::parse::{BinaryOp, Def, Pattern, Term};
use jaq_core::ops::Math;
use jaq_core::path::Part;

use super::scope::{Entry, Found, Frame, Scope};
use super::{Linear, Unbounded};

/// Nodes visited at most (defs are walked again at each call): bounds the walk itself.
const MAX_STEPS: usize = 20_000;
/// Nesting at most, calls included: bounds the stack of the walk and of a run in process.
const MAX_DEPTH: usize = 96;
/// How much a value's text can grow when converted to a string (`tostring`, interpolation):
/// JSON escapes a control character as six bytes.
pub(super) const TEXT_GROWTH: f64 = 6.0;
/// A `@format` string: a value converted to text, then escaped (`@html` turns `"` into five
/// bytes, `@uri` any byte into three).
const FORMAT_GROWTH: f64 = 36.0;
/// A number, a boolean, a type name: small values.
pub(super) const SMALL: f64 = 32.0;

/// Formats a string may use (`@base64 "…\(.x)"`); the others (`@sh`, `@csv`, decoding) are
/// left to the worker.
const FORMATS: &[&str] = &["@text", "@json", "@html", "@uri", "@base64"];

/// One term's bound, for an input of a given size.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bound {
    /// Outputs at most.
    pub(super) count: f64,
    /// The size of each output at most.
    pub(super) size: Linear,
    /// The largest value built anywhere in the term (its outputs included).
    pub(super) peak: Linear,
    pub(super) work: Linear,
}

impl Bound {
    pub(super) fn one(size: Linear, work: Linear) -> Bound {
        Bound {
            count: 1.0,
            size,
            peak: size,
            work,
        }
    }

    pub(super) fn nothing(work: Linear) -> Bound {
        Bound {
            count: 0.0,
            size: Linear::ZERO,
            peak: Linear::ZERO,
            work,
        }
    }
}

#[derive(Default)]
pub(super) struct Walk {
    steps: usize,
    depth: usize,
    /// Definitions being walked (by address): calling one of them again is recursion.
    calling: Vec<*const ()>,
}

pub(super) fn refuse<T>(why: impl Into<String>) -> Result<T, Unbounded> {
    Err(Unbounded(why.into()))
}

pub(super) type Ast<'s> = Term<&'s str>;

impl Walk {
    pub(super) fn term<'a, 's>(
        &mut self,
        term: &'a Ast<'s>,
        scope: Scope<'a, 's>,
        input: Linear,
    ) -> Result<Bound, Unbounded> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return refuse("the program is too large to bound");
        }
        if self.depth >= MAX_DEPTH {
            return refuse("the program nests too deeply");
        }
        self.depth += 1;
        let bound = self.term_inner(term, scope, input);
        self.depth -= 1;
        bound
    }

    fn term_inner<'a, 's>(
        &mut self,
        term: &'a Ast<'s>,
        scope: Scope<'a, 's>,
        input: Linear,
    ) -> Result<Bound, Unbounded> {
        let unit = Linear::fixed(1.0);
        match term {
            Term::Id => Ok(Bound::one(input, unit)),
            // Printed back, a literal may take more digits than written (`1e2`: 100).
            Term::Num(text) => Ok(Bound::one(Linear::fixed(text.len() as f64 + SMALL), unit)),
            Term::Str(format, parts) => self.string(*format, parts, scope, input),
            Term::Arr(None) => Ok(Bound::one(Linear::fixed(2.0), unit)),
            Term::Arr(Some(items)) => {
                let items = self.term(items, scope, input)?;
                let size = items
                    .size
                    .plus(unit)
                    .times(items.count)
                    .plus(Linear::fixed(2.0));
                Ok(Bound {
                    count: 1.0,
                    size,
                    peak: items.peak.max(size),
                    work: items.work.plus(size),
                })
            }
            Term::Obj(entries) => self.object(entries, scope, input),
            Term::Neg(term) => {
                let mut bound = self.term(term, scope, input)?;
                bound.size = bound.size.plus(Linear::fixed(SMALL));
                bound.peak = bound.peak.max(bound.size);
                Ok(bound)
            }
            Term::BinOp(left, op, right) => self.binary(left, op, right, scope, input),
            Term::Recurse => refuse("`..` visits every value"),
            Term::Label(..) | Term::Break(_) => {
                refuse("`label` and `break` are left to the worker")
            }
            Term::Fold(..) => refuse("`reduce` and `foreach` iterate"),
            Term::TryCatch(body, catch) => {
                let body = self.term(body, scope, input)?;
                let Some(catch) = catch else {
                    return Ok(body);
                };
                // What is caught: a value the body built, or a message quoting one.
                let error = body
                    .peak
                    .max(input)
                    .times(TEXT_GROWTH)
                    .plus(Linear::fixed(256.0));
                let handler = self.term(catch, scope, error)?;
                Ok(Bound {
                    count: body.count + handler.count,
                    size: body.size.max(handler.size),
                    peak: body.peak.max(handler.peak).max(error),
                    work: body.work.plus(handler.work).plus(error),
                })
            }
            Term::IfThenElse(branches, otherwise) => {
                self.conditional(branches, otherwise.as_deref(), scope, input)
            }
            Term::Def(defs, body) => self.define(defs, body, scope, input),
            Term::Call(name, args) => self.call(name, args, scope, input),
            Term::Var(name) => match scope.var(name) {
                Some(size) => Ok(Bound::one(size, unit)),
                None => refuse(format!("`{name}` is not bound by the program")),
            },
            Term::Path(head, path) => {
                let mut bound = self.term(head, scope, input)?;
                for (part, _) in &path.0 {
                    let indices: Vec<&Ast<'s>> = match part {
                        Part::Index(index) => vec![index],
                        Part::Range(None, None) => return refuse("`.[]` iterates"),
                        // A slice copies the part it keeps.
                        Part::Range(from, upto) => {
                            bound.work = bound.work.plus(bound.size.times(bound.count));
                            from.iter().chain(upto.iter()).collect()
                        }
                    };
                    // `null` when absent: no larger than a small value.
                    bound.size = bound.size.max(Linear::fixed(SMALL));
                    for index in indices {
                        // Indices are computed from the path's input, not from the value indexed.
                        let index = self.term(index, scope, input)?;
                        bound.work = bound
                            .work
                            .plus(index.work.times(bound.count))
                            .plus(index.size.times(bound.count * index.count));
                        bound.count *= index.count;
                        bound.peak = bound.peak.max(index.peak);
                    }
                }
                Ok(bound)
            }
        }
    }

    fn string<'a, 's>(
        &mut self,
        format: Option<&'s str>,
        parts: &'a [StrPart<&'s str, Ast<'s>>],
        scope: Scope<'a, 's>,
        input: Linear,
    ) -> Result<Bound, Unbounded> {
        let growth = match format {
            None => TEXT_GROWTH,
            Some(format) if FORMATS.contains(&format) => FORMAT_GROWTH,
            Some(format) => return refuse(format!("the format `{format}` is left to the worker")),
        };
        // `text`: the characters of the string; a value interpolated adds at most its JSON
        // text (a string adds its characters, anything else its JSON).
        let (mut count, mut text, mut peak, mut work) =
            (1.0, Linear::ZERO, Linear::ZERO, Linear::ZERO);
        for part in parts {
            match part {
                StrPart::Str(literal) => text = text.plus(Linear::fixed(literal.len() as f64)),
                StrPart::Char(_) => text = text.plus(Linear::fixed(4.0)),
                StrPart::Term(term) => {
                    let part = self.term(term, scope, input)?;
                    count *= part.count;
                    text = text.plus(part.size);
                    peak = peak.max(part.peak);
                    work = work.plus(part.work);
                }
            }
        }
        let size = text.times(growth).plus(Linear::fixed(2.0));
        Ok(Bound {
            count,
            size,
            peak: peak.max(size),
            work: work.plus(size).times(count.max(1.0)),
        })
    }

    fn object<'a, 's>(
        &mut self,
        entries: &'a [(Ast<'s>, Option<Ast<'s>>)],
        scope: Scope<'a, 's>,
        input: Linear,
    ) -> Result<Bound, Unbounded> {
        let (mut count, mut size, mut peak, mut work) =
            (1.0, Linear::fixed(2.0), Linear::ZERO, Linear::ZERO);
        for (key, value) in entries {
            let key_bound = self.term(key, scope, input)?;
            let value = match (key, value) {
                (_, Some(value)) => self.term(value, scope, input)?,
                // `{$x}`: the variable's value; `{a}`, `{"a"}`: the input's field.
                (Term::Var(_), None) => key_bound,
                (_, None) => Bound::one(input, Linear::fixed(1.0)),
            };
            count *= key_bound.count * value.count;
            size = size
                .plus(key_bound.size)
                .plus(value.size)
                .plus(Linear::fixed(4.0));
            peak = peak.max(key_bound.peak).max(value.peak);
            work = work.plus(key_bound.work).plus(value.work);
        }
        // Every entry may be computed again for every combination of the others' outputs.
        Ok(Bound {
            count,
            size,
            peak: peak.max(size),
            work: work.plus(size).times(count.max(1.0)),
        })
    }

    fn conditional<'a, 's>(
        &mut self,
        branches: &'a [(Ast<'s>, Ast<'s>)],
        otherwise: Option<&'a Ast<'s>>,
        scope: Scope<'a, 's>,
        input: Linear,
    ) -> Result<Bound, Unbounded> {
        let Some(((condition, then), rest)) = branches.split_first() else {
            return match otherwise {
                Some(otherwise) => self.term(otherwise, scope, input),
                None => Ok(Bound::one(input, Linear::fixed(1.0))),
            };
        };
        let condition = self.term(condition, scope, input)?;
        let then = self.term(then, scope, input)?;
        let rest = self.conditional(rest, otherwise, scope, input)?;
        Ok(Bound {
            count: condition.count * then.count.max(rest.count),
            size: then.size.max(rest.size),
            peak: condition.peak.max(then.peak).max(rest.peak),
            work: condition
                .work
                .plus(then.work.max(rest.work).times(condition.count)),
        })
    }

    fn binary<'a, 's>(
        &mut self,
        left: &'a Ast<'s>,
        op: &'a BinaryOp<&'s str>,
        right: &'a Ast<'s>,
        scope: Scope<'a, 's>,
        input: Linear,
    ) -> Result<Bound, Unbounded> {
        let small = Linear::fixed(SMALL);
        match op {
            BinaryOp::Pipe(None) => {
                let first = self.term(left, scope, input)?;
                let then = self.term(right, scope, first.size)?;
                Ok(Bound {
                    count: first.count * then.count,
                    size: then.size,
                    peak: first.peak.max(then.peak),
                    work: first.work.plus(then.work.times(first.count)),
                })
            }
            BinaryOp::Pipe(Some(pattern)) => {
                let value = self.term(left, scope, input)?;
                let mut names = Vec::new();
                let keys = self.pattern(pattern, scope, input, &mut names)?;
                let entries: Vec<Entry<'a, 's>> = names
                    .into_iter()
                    .map(|name| Entry::Var(name, value.size))
                    .collect();
                let then = self.bind(&entries, scope, right, input)?;
                let runs = value.count * keys.count;
                Ok(Bound {
                    count: runs * then.count,
                    size: then.size,
                    peak: value.peak.max(keys.peak).max(then.peak),
                    work: value
                        .work
                        .plus(keys.work.times(value.count))
                        .plus(then.work.times(runs)),
                })
            }
            BinaryOp::Comma | BinaryOp::Alt => {
                let first = self.term(left, scope, input)?;
                let second = self.term(right, scope, input)?;
                Ok(Bound {
                    count: first.count + second.count,
                    size: first.size.max(second.size),
                    peak: first.peak.max(second.peak),
                    work: first.work.plus(second.work),
                })
            }
            // Short-circuits: `false and empty` is `false`, so an output of the left side gives
            // one output even when the right side gives none.
            BinaryOp::Or | BinaryOp::And => {
                let l = self.term(left, scope, input)?;
                let r = self.term(right, scope, input)?;
                let count = l.count * r.count.max(1.0);
                Ok(Bound {
                    count,
                    size: small,
                    peak: l.peak.max(r.peak).max(small),
                    work: l
                        .work
                        .plus(r.work.times(l.count))
                        .plus(l.size.plus(r.size).times(count)),
                })
            }
            BinaryOp::Cmp(_) => self.pairwise(left, right, scope, input, |_, _| small),
            // Concatenation, or a sum that may print longer than either number (`0.1 + 0.2`).
            BinaryOp::Math(Math::Add) => {
                self.pairwise(left, right, scope, input, |l, r| l.plus(r).plus(small))
            }
            // Numbers, or a string split by another: each piece is at most the string.
            BinaryOp::Math(Math::Div) => {
                self.pairwise(left, right, scope, input, |l, _| l.times(4.0).plus(small))
            }
            BinaryOp::Math(Math::Rem) => self.pairwise(left, right, scope, input, |_, _| small),
            // Array difference compares every pair: only against a number literal.
            BinaryOp::Math(Math::Sub)
                if matches!(left, Term::Num(_)) || matches!(right, Term::Num(_)) =>
            {
                self.pairwise(left, right, scope, input, |l, r| l.max(r).plus(small))
            }
            BinaryOp::Math(Math::Sub) => {
                refuse("`-` on two computed values may compare every pair")
            }
            BinaryOp::Math(Math::Mul) => refuse("`*` repeats strings and merges objects deeply"),
            BinaryOp::Assign | BinaryOp::Update | BinaryOp::UpdateMath(_) | BinaryOp::UpdateAlt => {
                refuse("assignments are left to the worker")
            }
        }
    }

    /// `left op right`: every output of one with every output of the other; `result` bounds
    /// one result from the operands' sizes.
    fn pairwise<'a, 's>(
        &mut self,
        left: &'a Ast<'s>,
        right: &'a Ast<'s>,
        scope: Scope<'a, 's>,
        input: Linear,
        result: impl Fn(Linear, Linear) -> Linear,
    ) -> Result<Bound, Unbounded> {
        let l = self.term(left, scope, input)?;
        let r = self.term(right, scope, input)?;
        let count = l.count * r.count;
        let size = result(l.size, r.size);
        // Either side may be computed again for each output of the other, and each result
        // reads both operands.
        let work = l
            .work
            .times(r.count.max(1.0))
            .plus(r.work.times(l.count.max(1.0)))
            .plus(l.size.plus(r.size).plus(size).times(count));
        Ok(Bound {
            count,
            size,
            peak: l.peak.max(r.peak).max(size),
            work,
        })
    }

    /// The variables a destructuring pattern binds (each to a part of the value), and the
    /// bound of the keys it computes (`{(f): $x}`).
    fn pattern<'a, 's>(
        &mut self,
        pattern: &'a Pattern<&'s str>,
        scope: Scope<'a, 's>,
        input: Linear,
        names: &mut Vec<&'s str>,
    ) -> Result<Bound, Unbounded> {
        let mut keys = Bound::one(Linear::ZERO, Linear::ZERO);
        match pattern {
            Pattern::Var(name) => names.push(name),
            Pattern::Arr(items) => {
                for item in items {
                    let inner = self.pattern(item, scope, input, names)?;
                    keys = Self::and_then(keys, inner);
                }
            }
            Pattern::Obj(entries) => {
                for (key, item) in entries {
                    let key = self.term(key, scope, input)?;
                    let inner = self.pattern(item, scope, input, names)?;
                    keys = Self::and_then(Self::and_then(keys, key), inner);
                }
            }
        }
        Ok(keys)
    }

    /// Two computations where the second runs for each output of the first.
    fn and_then(first: Bound, second: Bound) -> Bound {
        Bound {
            count: first.count * second.count,
            size: first.size.max(second.size),
            peak: first.peak.max(second.peak),
            work: first.work.plus(second.work.times(first.count)),
        }
    }

    /// Walks `body` with `entries` in scope, the first outermost.
    fn bind<'a, 's>(
        &mut self,
        entries: &[Entry<'a, 's>],
        scope: Scope<'a, 's>,
        body: &'a Ast<'s>,
        input: Linear,
    ) -> Result<Bound, Unbounded> {
        let Some((entry, rest)) = entries.split_first() else {
            return self.term(body, scope, input);
        };
        let frame = Frame {
            entry: *entry,
            parent: scope,
        };
        self.bind(rest, Scope::Frame(&frame), body, input)
    }

    /// `def f: …; def g: …; body`: each definition sees itself and the ones before it.
    fn define<'a, 's>(
        &mut self,
        defs: &'a [Def<&'s str, Ast<'s>>],
        body: &'a Ast<'s>,
        scope: Scope<'a, 's>,
        input: Linear,
    ) -> Result<Bound, Unbounded> {
        let entries: Vec<Entry<'a, 's>> = defs.iter().map(Entry::Def).collect();
        self.bind(&entries, scope, body, input)
    }

    fn call<'a, 's>(
        &mut self,
        name: &'s str,
        args: &'a [Ast<'s>],
        scope: Scope<'a, 's>,
        input: Linear,
    ) -> Result<Bound, Unbounded> {
        match scope.call(name, args.len()) {
            // A filter argument runs, on this input, as written at the call site.
            Some(Found::Param(term, at)) => self.term(term, at, input),
            Some(Found::Def(def, at)) => {
                let address = def as *const Def<&'s str, Ast<'s>> as *const ();
                if self.calling.contains(&address) {
                    return refuse(format!("`{name}` calls itself (recursion)"));
                }
                // `$x` arguments are computed first, in the caller's scope; the body runs once
                // for every combination of their outputs. (jaq, unlike jq, does not also bind
                // `x` as a filter: a call to `x` in the body means whatever `x` is outside.)
                let mut runs = Bound::one(Linear::ZERO, Linear::ZERO);
                let mut entries = Vec::with_capacity(args.len());
                for (param, arg) in def.args.iter().zip(args) {
                    match param.strip_prefix('$') {
                        Some(_) => {
                            let value = self.term(arg, scope, input)?;
                            runs = Self::and_then(runs, value);
                            entries.push(Entry::Var(param, value.size));
                        }
                        None => entries.push(Entry::Param(param, arg, scope)),
                    }
                }
                self.calling.push(address);
                let body = self.bind(&entries, at, &def.body, input);
                self.calling.pop();
                let body = body?;
                Ok(Bound {
                    count: runs.count * body.count,
                    size: body.size,
                    peak: runs.peak.max(body.peak),
                    work: runs.work.plus(body.work.times(runs.count)),
                })
            }
            None => self.builtin(name, args, scope, input),
        }
    }
}
