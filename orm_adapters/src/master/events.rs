//! The events a master table records: `instance_data`, `previous_data`, meta, correlation id.

use chrono::Utc;
use cqrs_actors::{Envelope, Error, JsonObject, Result, Route, SignalType, values};
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, DatabaseTransaction, EntityTrait, IntoActiveModel,
    ModelTrait, Value,
};
use serde_json::Value as Json;

use super::{MasterTable, MetaInput};
use crate::columns::revision_of;
use crate::columns::to_json;

impl<E> MasterTable<E>
where
    E: EntityTrait,
    E::Model: IntoActiveModel<E::ActiveModel> + Sync,
    E::ActiveModel: ActiveModelTrait<Entity = E> + ActiveModelBehavior + Send,
{
    pub(super) async fn instance_data(
        &self,
        txn: &DatabaseTransaction,
        model: &E::Model,
    ) -> Result<JsonObject> {
        let mut data = match &self.serializer {
            Some(serialize) => serialize(model, txn).await?,
            None => {
                let mut data = JsonObject::new();
                for column in &self.fields {
                    data.insert(self.wire_key(column), to_json(&model.get(*column))?);
                }
                data
            }
        };
        data.insert(
            "cqrs_revision".into(),
            Json::from(revision_of(&model.get(self.revision))?),
        );
        data.insert(
            "cqrs_updated".into(),
            updated_text(&model.get(self.updated))?,
        );
        Ok(data)
    }

    pub(super) async fn save_event(
        &self,
        txn: &DatabaseTransaction,
        model: &E::Model,
        previous: Option<JsonObject>,
        signal: SignalType,
        queue: Option<&str>,
    ) -> Result<Option<(Envelope, Route)>> {
        if !self.model.produces() || !self.is_synced(model) {
            return Ok(None);
        }
        let data = self.instance_data(txn, model).await?;
        let pk = to_json(&model.get(self.pk))?;
        let route = match queue {
            Some(q) => Route::queue(q, self.model.cqrs_id().to_owned()),
            None => Route::broadcast(self.model.cqrs_id().to_owned()),
        };
        Ok(Some((
            self.envelope(signal, data, previous, pk, queue),
            route,
        )))
    }

    pub(super) fn delete_event(&self, old: &E::Model) -> Result<Option<(Envelope, Route)>> {
        if !self.model.produces() || !self.is_synced(old) {
            return Ok(None);
        }
        let pk = to_json(&old.get(self.pk))?;
        let mut data = JsonObject::new();
        data.insert("id".into(), pk.clone());
        data.insert(
            "cqrs_revision".into(),
            Json::from(revision_of(&old.get(self.revision))? + 1),
        );
        data.insert(
            "cqrs_updated".into(),
            Json::String(values::format_datetime(&Utc::now())),
        );
        if let Some(custom) = self.delete_data.as_ref().and_then(|f| f(old)) {
            data.insert("custom".into(), custom);
        }
        let envelope = self.envelope(SignalType::Delete, data, None, pk, None);
        Ok(Some((
            envelope,
            Route::broadcast(self.model.cqrs_id().to_owned()),
        )))
    }

    pub(super) fn envelope(
        &self,
        signal: SignalType,
        data: JsonObject,
        previous: Option<JsonObject>,
        pk: Json,
        queue: Option<&str>,
    ) -> Envelope {
        let meta = self.meta.as_ref().map_or_else(
            || Some(JsonObject::new()),
            |f| {
                f(&MetaInput {
                    signal,
                    instance_data: &data,
                    previous_data: previous.as_ref(),
                })
            },
        );
        let correlation = self
            .correlation
            .as_ref()
            .and_then(|f| f(signal, self.model.cqrs_id(), &pk, queue));
        Envelope::new(signal, self.model.cqrs_id().to_owned(), data)
            .with_pk(pk)
            .with_previous_data(previous)
            .with_meta(meta)
            .with_correlation_id(correlation)
    }

    /// `previous_data` of a create: each tracked field with a value, as `null`.
    pub(super) fn created_tracked(&self, model: &E::Model) -> Option<JsonObject> {
        if self.tracked.is_empty() {
            return None;
        }
        Some(
            self.tracked
                .iter()
                .filter(|c| !is_null(&model.get(**c)))
                .map(|c| (self.wire_key(c), Json::Null))
                .collect(),
        )
    }

    /// `previous_data` of an update: the tracked fields that changed, with their old values.
    pub(super) fn changed_tracked(
        &self,
        old: &E::Model,
        new: &E::Model,
    ) -> Result<Option<JsonObject>> {
        if self.tracked.is_empty() {
            return Ok(None);
        }
        let mut out = JsonObject::new();
        for c in &self.tracked {
            let (before, after) = (to_json(&old.get(*c))?, to_json(&new.get(*c))?);
            if before != after {
                out.insert(self.wire_key(c), before);
            }
        }
        Ok(Some(out))
    }

    /// `previous_data` of a bulk update: every tracked field with its old value.
    pub(super) fn all_tracked(&self, old: &E::Model) -> Result<Option<JsonObject>> {
        if self.tracked.is_empty() {
            return Ok(None);
        }
        let mut out = JsonObject::new();
        for c in &self.tracked {
            out.insert(self.wire_key(c), to_json(&old.get(*c))?);
        }
        Ok(Some(out))
    }
}

fn is_null(value: &Value) -> bool {
    to_json(value).is_ok_and(|j| j.is_null())
}

fn updated_text(value: &Value) -> Result<Json> {
    match to_json(value)? {
        Json::Null => Err(Error::invalid_data("cqrs_updated is null")),
        text => Ok(text),
    }
}
