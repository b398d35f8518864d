//! Row format: `"instances": [...]`, regrouped per input on the fly.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use crate::tensor::json::Shaped;

use super::ctx::Ctx;

/// `"instances"`: a list of instances; returns how many.
pub(super) struct InstancesSeed<'c, 's> {
    pub(super) ctx: &'c mut Ctx<'s>,
}

impl<'de> DeserializeSeed<'de> for InstancesSeed<'_, '_> {
    type Value = usize;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for InstancesSeed<'_, '_> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list of instances")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut named = None;
        let mut index = 0;
        loop {
            let seed = InstanceSeed {
                ctx: &mut *self.ctx,
                index,
                named: &mut named,
            };
            if seq.next_element_seed(seed)?.is_none() {
                break;
            }
            index += 1;
        }
        if index == 0 {
            return Err(self.ctx.fail("\"instances\" is empty".into()));
        }
        Ok(index)
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<usize, A::Error> {
        Err(self.not_a_list())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<usize, E> {
        Err(self.not_a_list())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<usize, E> {
        Err(self.not_a_list())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<usize, E> {
        Err(self.not_a_list())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<usize, E> {
        Err(self.not_a_list())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<usize, E> {
        Err(self.not_a_list())
    }
    fn visit_unit<E: de::Error>(self) -> Result<usize, E> {
        Err(self.not_a_list())
    }
}

impl InstancesSeed<'_, '_> {
    fn not_a_list<E: de::Error>(self) -> E {
        self.ctx
            .fail("\"instances\" must be a list with one item per instance".into())
    }
}

/// One instance: an object of input name → value, or the value of the
/// single input. `named` is instance 0's form, which every instance keeps.
struct InstanceSeed<'c, 's, 'n> {
    ctx: &'c mut Ctx<'s>,
    index: usize,
    named: &'n mut Option<bool>,
}

impl<'de> DeserializeSeed<'de> for InstanceSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl InstanceSeed<'_, '_, '_> {
    /// Checks this instance's form against instance 0's.
    fn form<E: de::Error>(&mut self, object: bool) -> Result<(), E> {
        match *self.named {
            None => {
                *self.named = Some(object);
                Ok(())
            }
            Some(named) if named == object => Ok(()),
            Some(named) => {
                let message = format!(
                    "\"instances\"[{}] {} an object but \"instances\"[0] {}; all instances must have one form",
                    self.index,
                    if named { "is not" } else { "is" },
                    if named { "is" } else { "is not" },
                );
                Err(self.ctx.fail(message))
            }
        }
    }

    /// A bare value: instance `index` of the single input.
    fn bare<E: de::Error>(mut self, feed: impl FnOnce(Shaped<'_>) -> Result<(), E>) -> Result<(), E> {
        self.form(false)?;
        let i = self.ctx.single_input("\"instances\"")?;
        let shape = self.ctx.decode_value(i, "\"instances\"", feed)?;
        self.ctx.instance_shape(i, self.index, shape)
    }
}

impl<'de> Visitor<'de> for InstanceSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an instance")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.form(true)?;
        let index = self.index;
        let field = format!("\"instances\"[{index}]");
        let mut here = vec![false; self.ctx.columns.len()];
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let Some(i) = self.ctx.signature.input_index(&key) else {
                return Err(self.ctx.unknown_input(&field, &key));
            };
            if here[i] {
                return Err(self.ctx.fail(format!("{field} names input '{key}' twice")));
            }
            if index > 0 && self.ctx.columns[i].seen < index {
                return Err(self.ctx.fail(format!(
                    "{field} has input '{key}', which \"instances\"[0] lacks; every instance must name the same inputs"
                )));
            }
            here[i] = true;
            let shape = self
                .ctx
                .decode_value(i, "\"instances\"", |seed| map.next_value_seed(seed))?;
            self.ctx.instance_shape(i, index, shape)?;
        }
        let lacking = self
            .ctx
            .columns
            .iter()
            .zip(&here)
            .position(|(c, &h)| c.seen > 0 && !h);
        if let Some(i) = lacking {
            let name = self.ctx.signature.inputs[i].name.clone();
            return Err(self.ctx.fail(format!(
                "{field} lacks input '{name}', which \"instances\"[0] has; every instance must name the same inputs"
            )));
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.bare(|s| s.visit_seq(seq))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.bare(|s| s.visit_str(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.bare(|s| s.visit_f64(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.bare(|s| s.visit_i64(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.bare(|s| s.visit_u64(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.bare(|s| s.visit_bool(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.bare(|s| s.visit_unit())
    }
}
