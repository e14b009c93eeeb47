//! The `book` table the master-path benches write, its rows and the event a master table
//! records for each.

use std::time::Duration;

use cqrs_sync::{Codec, EncodedEvent, Envelope, Route, SignalType};
use sea_orm::ActiveValue::Set;
use serde_json::json;

pub mod entity {
    //! The `book` entity.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "book")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub title: String,
        pub body: String,
        pub cqrs_revision: i64,
        pub cqrs_updated: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Row `id`, its text column `body`.
pub fn row(id: i64, body: &str) -> entity::ActiveModel {
    entity::ActiveModel {
        id: Set(id),
        title: Set(format!("book {id}")),
        body: Set(body.to_owned()),
        ..Default::default()
    }
}

/// The SAVE of row `id` as a master table encodes it (JSON, broadcast, a day to live).
pub fn event(id: i64, body: &str) -> cqrs_sync::Result<EncodedEvent> {
    let serde_json::Value::Object(data) = json!({
        "id": id, "title": format!("book {id}"), "body": body,
        "cqrs_revision": 0, "cqrs_updated": "2026-11-30 12:00:00.123456+00:00",
    }) else {
        unreachable!("a JSON object literal")
    };
    let envelope = Envelope::new(SignalType::Save, "book", data).with_pk(json!(id));
    EncodedEvent::encode(
        envelope,
        Route::broadcast("book"),
        Codec::Json,
        Some(Duration::from_secs(86_400)),
    )
}
