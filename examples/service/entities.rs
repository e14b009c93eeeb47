//! The domain, as a Django project of the same shape declares it:
//!
//! ```python
//! class Publisher(MasterMixin):              # CQRS_ID = "publisher"
//!     name = models.CharField(max_length=200)
//!
//! class Author(MasterMixin):                 # CQRS_ID = "author", CQRS_TRACKED_FIELDS = ("name", "email")
//!     id = models.IntegerField(primary_key=True)
//!     name = models.CharField(max_length=200)
//!     email = models.EmailField(null=True)
//!     birth_date = models.DateField(null=True)
//!     rating = models.DecimalField(max_digits=6, decimal_places=2)
//!     publisher = models.ForeignKey(Publisher, null=True, on_delete=models.PROTECT)
//!     tags = models.JSONField(default=list)
//!
//! class Book(MasterMixin):                   # CQRS_ID = "book"
//!     id = models.UUIDField(primary_key=True, default=uuid.uuid4)
//!     title = models.CharField(max_length=200)
//!     author = models.ForeignKey(Author, on_delete=models.CASCADE)
//!     price = models.DecimalField(max_digits=10, decimal_places=2)
//!     published = models.DateField(null=True)
//!     extra = models.JSONField(default=dict)
//! ```
//!
//! The replica keeps the same columns, so both services use these entities; only the master
//! declares the foreign keys (a replica may receive a book before its author).

use sea_orm::sea_query::{ForeignKey, TableCreateStatement};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, Schema};
use serde::Serialize;

/// A table of the domain as the HTTP endpoints name it.
pub trait Table: EntityTrait<Model: Serialize> {
    /// The primary key's type, as it appears in a URL.
    type Pk: serde::de::DeserializeOwned
        + std::fmt::Display
        + Clone
        + Into<sea_orm::Value>
        + Into<<Self::PrimaryKey as sea_orm::PrimaryKeyTrait>::ValueType>
        + 'static;

    /// The CQRS id, also the singular name in messages (`author 7 not found`).
    const CQRS_ID: &'static str;

    /// The primary key's column.
    fn pk() -> Self::Column;
}

/// `publisher`: the primary key comes from the database.
pub mod publisher {
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    /// A publisher.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "publisher")]
    pub struct Model {
        /// The primary key, assigned by the database.
        #[sea_orm(primary_key)]
        pub id: i64,
        /// The name.
        pub name: String,
        /// Bumped by every write on the master.
        pub cqrs_revision: i64,
        /// When the master last wrote the row.
        pub cqrs_updated: ChronoDateTimeUtc,
    }

    /// No relations declared: the foreign keys are added by [`super::create_tables`].
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `author`: the client chooses the primary key.
pub mod author {
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    /// An author.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "author")]
    pub struct Model {
        /// The primary key, given by the client.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        /// The name (tracked: its previous value travels in `previous_data`).
        pub name: String,
        /// The e-mail address (tracked).
        pub email: Option<String>,
        /// The day of birth.
        pub birth_date: Option<Date>,
        /// A score with two decimals, `numeric(6, 2)`.
        #[sea_orm(column_type = "Decimal(Some((6, 2)))")]
        #[serde(serialize_with = "super::two_places")]
        pub rating: Decimal,
        /// The publisher's id; on the wire the key is `publisher`, as Django names the field.
        pub publisher_id: Option<i64>,
        /// A JSON list of strings.
        pub tags: Json,
        /// Bumped by every write on the master.
        pub cqrs_revision: i64,
        /// When the master last wrote the row.
        pub cqrs_updated: ChronoDateTimeUtc,
    }

    /// No relations declared: the foreign keys are added by [`super::create_tables`].
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `book`: a UUID primary key, given by the client or made by the master.
pub mod book {
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    /// A book.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "book")]
    pub struct Model {
        /// The primary key.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        /// The title.
        pub title: String,
        /// The author's id; on the wire the key is `author`.
        pub author_id: i64,
        /// The price, `numeric(10, 2)`.
        #[sea_orm(column_type = "Decimal(Some((10, 2)))")]
        #[serde(serialize_with = "super::two_places")]
        pub price: Decimal,
        /// The day of publication.
        pub published: Option<Date>,
        /// A JSON object of anything else.
        pub extra: Json,
        /// Bumped by every write on the master.
        pub cqrs_revision: i64,
        /// When the master last wrote the row.
        pub cqrs_updated: ChronoDateTimeUtc,
    }

    /// No relations declared: the foreign keys are added by [`super::create_tables`].
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A decimal column as JSON: a string with its two decimal places (`"4.50"`), whatever the
/// database kept (SQLite has no decimal type: its `real` column gives `4.5` back).
fn two_places<S: serde::Serializer>(
    value: &rust_decimal::Decimal,
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut value = *value;
    value.rescale(2);
    s.collect_str(&value)
}

impl Table for publisher::Entity {
    type Pk = i64;
    const CQRS_ID: &'static str = "publisher";

    fn pk() -> Self::Column {
        publisher::Column::Id
    }
}

impl Table for author::Entity {
    type Pk = i64;
    const CQRS_ID: &'static str = "author";

    fn pk() -> Self::Column {
        author::Column::Id
    }
}

impl Table for book::Entity {
    type Pk = uuid::Uuid;
    const CQRS_ID: &'static str = "book";

    fn pk() -> Self::Column {
        book::Column::Id
    }
}

/// Whether [`create_tables`] declares the foreign keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignKeys {
    /// The master's tables: `author.publisher_id` and `book.author_id` must name a row.
    Enforced,
    /// A replica's copies: events of different tables may arrive in any order.
    None,
}

/// Creates the three tables unless they exist.
pub async fn create_tables(db: &DatabaseConnection, keys: ForeignKeys) -> Result<(), DbErr> {
    let schema = Schema::new(db.get_database_backend());
    let table = |mut stmt: TableCreateStatement| {
        stmt.if_not_exists();
        stmt
    };
    let mut authors = table(schema.create_table_from_entity(author::Entity));
    let mut books = table(schema.create_table_from_entity(book::Entity));
    // No `ON DELETE` action: a parent row with children cannot be deleted. A cascade in the
    // database would delete the books without their DELETE events; the master deletes them
    // through their own table first. (`RESTRICT` would do the same, but SQLite reports it as
    // a trigger error rather than a foreign key one.)
    if keys == ForeignKeys::Enforced {
        authors.foreign_key(
            ForeignKey::create()
                .name("fk_author_publisher")
                .from(author::Entity, author::Column::PublisherId)
                .to(publisher::Entity, publisher::Column::Id),
        );
        books.foreign_key(
            ForeignKey::create()
                .name("fk_book_author")
                .from(book::Entity, book::Column::AuthorId)
                .to(author::Entity, author::Column::Id),
        );
    }
    db.execute(&table(schema.create_table_from_entity(publisher::Entity)))
        .await?;
    db.execute(&authors).await?;
    db.execute(&books).await?;
    Ok(())
}
