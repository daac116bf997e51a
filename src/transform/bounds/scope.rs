//! What a name means where it is used: variables, filter parameters and definitions in scope,
//! as a chain of frames on the walk's stack, innermost first.
use jaq_core::load::parse::{Def, Term};

use super::Linear;

/// A binding in scope, innermost first.
#[derive(Clone, Copy)]
pub(super) enum Scope<'a, 's> {
    Root,
    Frame(&'a Frame<'a, 's>),
}

pub(super) struct Frame<'a, 's> {
    pub(super) entry: Entry<'a, 's>,
    pub(super) parent: Scope<'a, 's>,
}

#[derive(Clone, Copy)]
pub(super) enum Entry<'a, 's> {
    /// `$x`, bound to a value of this size.
    Var(&'s str, Linear),
    /// A filter parameter: the argument's term, walked in the caller's scope when called.
    Param(&'s str, &'a Term<&'s str>, Scope<'a, 's>),
    /// A definition; its body sees this frame (itself and the defs before it).
    Def(&'a Def<&'s str, Term<&'s str>>),
}

pub(super) enum Found<'a, 's> {
    Param(&'a Term<&'s str>, Scope<'a, 's>),
    Def(&'a Def<&'s str, Term<&'s str>>, Scope<'a, 's>),
}

impl<'a, 's> Scope<'a, 's> {
    pub(super) fn var(self, name: &str) -> Option<Linear> {
        let mut scope = self;
        while let Scope::Frame(frame) = scope {
            if let Entry::Var(bound, size) = frame.entry {
                if bound == name {
                    return Some(size);
                }
            }
            scope = frame.parent;
        }
        None
    }

    pub(super) fn call(self, name: &str, arity: usize) -> Option<Found<'a, 's>> {
        let mut scope = self;
        while let Scope::Frame(frame) = scope {
            match frame.entry {
                Entry::Param(param, term, at) if param == name && arity == 0 => {
                    return Some(Found::Param(term, at))
                }
                Entry::Def(def) if def.name == name && def.args.len() == arity => {
                    return Some(Found::Def(def, scope))
                }
                _ => {}
            }
            scope = frame.parent;
        }
        None
    }
}
