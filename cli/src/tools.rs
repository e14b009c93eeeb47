//! [`Tools`]: what the commands work on: the configuration, the replica tables and the master
//! sources, by CQRS id. The standalone command builds it from its file
//! ([`Tools::from_file`](crate::Tools::from_file)); a service builds it in code, with its own
//! tables, hooks and serializers.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use cqrs_actors::{
    Connect, CqrsConfig, CqrsSystem, CqrsSystemBuilder, MasterRegistration, ReplicaModel,
    TransportHandle,
};
use cqrs_orm_adapters::{MasterSource, ReplicaTable};

use crate::error::{CliError, CliResult};

/// A replica table and the model `consume` registers for it.
#[derive(Clone)]
struct Replica {
    table: ReplicaTable,
    model: Arc<dyn Fn() -> ReplicaModel + Send + Sync>,
}

/// A master source and what the system needs to publish through it.
#[derive(Clone)]
struct Master {
    source: Arc<dyn MasterSource>,
    registration: Option<MasterRegistration>,
}

/// The configuration and the tables the commands work on.
///
/// ```no_run
/// use cqrs_actors::CqrsConfig;
/// use cqrs_cli::Tools;
/// use cqrs_orm_adapters::{MasterView, ReplicaTable};
/// # async fn run(db: sea_orm::DatabaseConnection) -> Result<(), cqrs_cli::CliError> {
/// let tools = Tools::new(CqrsConfig::load(None)?, cqrs_transports::UrlConnector)
///     .replica("author", ReplicaTable::introspect(db.clone(), "author").await?)
///     .master(MasterView::introspect("book", db, "book").await?);
/// # let _ = tools; Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Tools {
    config: CqrsConfig,
    connector: Arc<dyn Connect>,
    replicas: BTreeMap<String, Replica>,
    masters: BTreeMap<String, Master>,
}

impl fmt::Debug for Tools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tools")
            .field("config", &self.config)
            .field("replicas", &self.replicas.keys().collect::<Vec<_>>())
            .field("masters", &self.masters.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A connector shared by every system the commands start.
struct SharedConnector(Arc<dyn Connect>);

impl Connect for SharedConnector {
    fn connect<'a>(
        &'a self,
        config: &'a CqrsConfig,
    ) -> futures_util::future::LocalBoxFuture<'a, cqrs_actors::Result<TransportHandle>> {
        self.0.connect(config)
    }
}

impl Tools {
    /// Tools over `config`, connecting transports with `connector` (usually
    /// `cqrs_transports::UrlConnector`, which picks one by the configuration's URL).
    pub fn new(config: CqrsConfig, connector: impl Connect) -> Self {
        Self {
            config,
            connector: Arc::new(connector),
            replicas: BTreeMap::new(),
            masters: BTreeMap::new(),
        }
    }

    /// Registers a replica table under `cqrs_id`, applied by `consume` as
    /// `ReplicaModel::new(cqrs_id, table)`.
    #[must_use]
    pub fn replica(self, cqrs_id: impl Into<String>, table: ReplicaTable) -> Self {
        let cqrs_id = cqrs_id.into();
        let (id, t) = (cqrs_id.clone(), table.clone());
        self.replica_with(cqrs_id, table, move || {
            ReplicaModel::new(id.clone(), t.clone())
        })
    }

    /// Registers a replica table under `cqrs_id`, with the model `consume` registers built by
    /// `model` (for retry policies, direct syncs, or a handler around the table).
    #[must_use]
    pub fn replica_with(
        mut self,
        cqrs_id: impl Into<String>,
        table: ReplicaTable,
        model: impl Fn() -> ReplicaModel + Send + Sync + 'static,
    ) -> Self {
        self.replicas.insert(
            cqrs_id.into(),
            Replica {
                table,
                model: Arc::new(model),
            },
        );
        self
    }

    /// Registers a master source that publishes directly (a
    /// [`MasterView`](cqrs_orm_adapters::MasterView)).
    #[must_use]
    pub fn master(mut self, source: impl MasterSource + 'static) -> Self {
        self.masters.insert(
            source.cqrs_id().to_owned(),
            Master {
                source: Arc::new(source),
                registration: None,
            },
        );
        self
    }

    /// Registers a master table of this service on `db`: its SYNCs go the way its writes go
    /// (through its outbox), and `sync` waits until the broker confirmed them.
    #[must_use]
    pub fn master_table<E>(
        mut self,
        table: &cqrs_orm_adapters::MasterTable<E>,
        db: sea_orm::DatabaseConnection,
    ) -> Self
    where
        E: sea_orm::EntityTrait + Sync,
        E::Model: sea_orm::IntoActiveModel<E::ActiveModel> + Sync,
        E::ActiveModel: sea_orm::ActiveModelTrait<Entity = E> + sea_orm::ActiveModelBehavior + Send,
    {
        let source = table.source(db);
        self.masters.insert(
            source.cqrs_id().to_owned(),
            Master {
                source,
                registration: Some(MasterRegistration::from(table)),
            },
        );
        self
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &CqrsConfig {
        &self.config
    }

    /// The replica table of `cqrs_id`, or a usage error listing the known ids.
    pub fn replica_table(&self, cqrs_id: &str) -> CliResult<&ReplicaTable> {
        self.replicas
            .get(cqrs_id)
            .map(|r| &r.table)
            .ok_or_else(|| unknown("replica", cqrs_id, self.replicas.keys()))
    }

    /// The master source of `cqrs_id`, or a usage error listing the known ids.
    pub fn master_source(&self, cqrs_id: &str) -> CliResult<&Arc<dyn MasterSource>> {
        self.masters
            .get(cqrs_id)
            .map(|m| &m.source)
            .ok_or_else(|| unknown("master", cqrs_id, self.masters.keys()))
    }

    /// The replica CQRS ids.
    #[must_use]
    pub fn replica_ids(&self) -> Vec<String> {
        self.replicas.keys().cloned().collect()
    }

    /// The replica queue, or a usage error.
    pub fn queue(&self) -> CliResult<&str> {
        self.config
            .queue()
            .ok_or_else(|| CliError::usage("the configuration names no queue (`queue = \"...\"`)"))
    }

    /// The replica queue and its dead-letter queue, or a usage error when there is no queue.
    pub fn queues(&self) -> CliResult<(String, String)> {
        let queue = self.queue()?.to_owned();
        let dead_letters = self
            .config
            .dead_letter_queue()
            .ok_or_else(|| CliError::usage("the configuration names no dead-letter queue"))?;
        Ok((queue, dead_letters))
    }

    /// A system that consumes the given replica ids (none: a publishing system only, with the
    /// master tables registered).
    pub(crate) async fn start_system(
        &self,
        config: CqrsConfig,
        replica_ids: &[String],
    ) -> CliResult<CqrsSystem> {
        let mut builder = CqrsSystemBuilder::new()
            .config(config)
            .connector(SharedConnector(self.connector.clone()));
        for id in replica_ids {
            let replica = self
                .replicas
                .get(id)
                .ok_or_else(|| unknown("replica", id, self.replicas.keys()))?;
            builder = builder.replica((replica.model)());
        }
        if replica_ids.is_empty() {
            for (cqrs_id, master) in &self.masters {
                builder = builder.master(match &master.registration {
                    Some(r) => r.clone(),
                    // A master view publishes its SYNCs by hand, through the publisher.
                    None => MasterRegistration::from(cqrs_actors::MasterModel::new(cqrs_id)),
                });
            }
        }
        Ok(builder.start().await?)
    }

    /// The transport alone, for the dead-letter and topology tools.
    pub(crate) async fn connect(&self) -> CliResult<TransportHandle> {
        Ok(self.connector.connect(&self.config).await?)
    }
}

fn unknown<'a>(side: &str, id: &str, known: impl Iterator<Item = &'a String>) -> CliError {
    let known: Vec<&str> = known.map(String::as_str).collect();
    CliError::usage(if known.is_empty() {
        format!("wrong CQRS id {id:?}: the configuration has no {side} tables")
    } else {
        format!(
            "wrong CQRS id {id:?}: the {side} ids are {}",
            known.join(", ")
        )
    })
}
