//! Columnar format: `"inputs": ...`, one tensor or a map of them.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use crate::tensor::json::Shaped;

use super::ctx::Ctx;

/// `"inputs"`: an object of input name → tensor, or the single input's tensor.
pub(super) struct InputsSeed<'c, 's> {
    pub(super) ctx: &'c mut Ctx<'s>,
}

impl<'de> DeserializeSeed<'de> for InputsSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl InputsSeed<'_, '_> {
    fn bare<E: de::Error>(self, feed: impl FnOnce(Shaped<'_>) -> Result<(), E>) -> Result<(), E> {
        let i = self.ctx.single_input("\"inputs\"")?;
        let shape = self.ctx.decode_value(i, "\"inputs\"", feed)?;
        self.ctx.columns[i].shape = Some(shape);
        Ok(())
    }
}

impl<'de> Visitor<'de> for InputsSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "inputs")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let Some(i) = self.ctx.signature.input_index(&key) else {
                return Err(self.ctx.unknown_input("\"inputs\"", &key));
            };
            if self.ctx.columns[i].shape.is_some() {
                return Err(self.ctx.fail(format!("\"inputs\" names input '{key}' twice")));
            }
            let shape = self
                .ctx
                .decode_value(i, "\"inputs\"", |seed| map.next_value_seed(seed))?;
            self.ctx.columns[i].shape = Some(shape);
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
