//! SeaORM entities of the adapter tests.

/// A replica table with one column of every supported kind.
pub mod book {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "book")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub title: String,
        #[sea_orm(unique, nullable)]
        pub isbn: Option<String>,
        #[sea_orm(column_type = "Decimal(Some((10, 2)))", nullable)]
        pub price: Option<Decimal>,
        pub published: Option<Date>,
        pub rating: Option<f64>,
        pub active: Option<bool>,
        pub code: Option<Uuid>,
        pub extra: Option<Json>,
        pub stamped: Option<ChronoDateTimeUtc>,
        pub naive: Option<ChronoDateTime>,
        pub at: Option<ChronoTime>,
        pub cqrs_revision: i32,
        pub cqrs_updated: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A replica table with a mapping (`name` on the master is `title` here) and a text key.
pub mod tag {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "tag")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub title: String,
        pub cqrs_revision: i64,
        pub cqrs_updated: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A master table: the service owns it and publishes its rows.
pub mod author {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "author")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        #[sea_orm(column_type = "Decimal(Some((10, 2)))", nullable)]
        pub fee: Option<Decimal>,
        pub born: Option<Date>,
        pub cqrs_revision: i64,
        pub cqrs_updated: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A replica table other rows point to (the parent of [`child`]).
pub mod parent {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "parent")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub name: String,
        pub cqrs_revision: i64,
        pub cqrs_updated: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A replica table with a foreign key to [`parent`], a bounded text, a decimal and a JSON
/// column, for the database's own checks (the tests add `CHECK (qty >= 0)`).
pub mod child {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "child")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub parent_id: i64,
        #[sea_orm(column_type = "String(StringLen::N(20))")]
        pub label: String,
        pub qty: i32,
        #[sea_orm(column_type = "Decimal(Some((6, 2)))", nullable)]
        pub price: Option<Decimal>,
        pub extra: Option<Json>,
        pub cqrs_revision: i64,
        pub cqrs_updated: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(
            belongs_to = "super::parent::Entity",
            from = "Column::ParentId",
            to = "super::parent::Column::Id"
        )]
        Parent,
    }

    impl Related<super::parent::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Parent.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}
