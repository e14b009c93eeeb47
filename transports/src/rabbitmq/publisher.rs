//! Publishing with publisher confirms and a window of unconfirmed messages.
//!
//! One task takes publishes in the order they were asked for and writes them to the
//! confirm-mode channel without waiting for the broker; each then waits for its own confirm
//! while the next ones go out, up to `publish_window` at once. A publish whose connection is
//! lost before its confirm is sent again on the next connection (at least once; the replica's
//! revision rules make the duplicate harmless) until the publish timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_actors::{Error, ErrorKind, Result};
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, Confirmation, PublisherConfirm};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::link::{LinkRx, wait_link};

/// One message for the broker.
pub(crate) struct Outgoing {
    pub exchange: ShortString,
    pub routing_key: ShortString,
    pub body: Vec<u8>,
    pub properties: BasicProperties,
}

struct Job {
    out: Outgoing,
    reply: oneshot::Sender<Result<()>>,
}

/// The handle on the publishing task. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Publisher {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Publisher {
    pub fn spawn(
        link: LinkRx,
        lost: mpsc::UnboundedSender<u64>,
        window: usize,
        timeout: Duration,
    ) -> Self {
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, link, lost, window, timeout));
        Self { jobs }
    }

    /// Queues `out` now (so calls keep their order); resolves once the broker confirmed it.
    pub fn publish(&self, out: Outgoing) -> impl Future<Output = Result<()>> + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self.jobs.send(Job { out, reply }).is_ok();
        async move {
            if !queued {
                return Err(Error::unavailable("RabbitMQ publisher"));
            }
            answer
                .await
                .map_err(|_| Error::unavailable("RabbitMQ publisher"))?
        }
    }
}

async fn run(
    mut jobs: mpsc::UnboundedReceiver<Job>,
    mut link: LinkRx,
    lost: mpsc::UnboundedSender<u64>,
    window: usize,
    timeout: Duration,
) {
    let window = Arc::new(Semaphore::new(window));
    while let Some(job) = jobs.recv().await {
        let Ok(permit) = Arc::clone(&window).acquire_owned().await else {
            return;
        };
        let deadline = Instant::now() + timeout;
        let out = Arc::new(job.out);
        match send(&mut link, &lost, &out, None, deadline).await {
            Ok((generation, confirm)) => {
                let (link, lost) = (link.clone(), lost.clone());
                tokio::spawn(async move {
                    let result =
                        await_confirm(link, lost, out, generation, confirm, deadline, permit).await;
                    let _ = job.reply.send(result);
                });
            }
            Err(e) => {
                let _ = job.reply.send(Err(e));
            }
        }
    }
}

/// Writes `out` on a connection newer than `after`, retrying on new connections until
/// `deadline`.
async fn send(
    link: &mut LinkRx,
    lost: &mpsc::UnboundedSender<u64>,
    out: &Outgoing,
    mut after: Option<u64>,
    deadline: Instant,
) -> Result<(u64, PublisherConfirm)> {
    loop {
        let l = wait_link(link, after, deadline).await?;
        let sent = l
            .publish
            .basic_publish(
                out.exchange.clone(),
                out.routing_key.clone(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &out.body,
                out.properties.clone(),
            )
            .await;
        match sent {
            Ok(confirm) => return Ok((l.generation, confirm)),
            Err(e) => {
                tracing::debug!(error = %e, "publish failed; waiting for a new connection");
                let _ = lost.send(l.generation);
                after = Some(l.generation);
            }
        }
    }
}

async fn await_confirm(
    mut link: LinkRx,
    lost: mpsc::UnboundedSender<u64>,
    out: Arc<Outgoing>,
    mut generation: u64,
    mut confirm: PublisherConfirm,
    deadline: Instant,
    permit: OwnedSemaphorePermit,
) -> Result<()> {
    let result = loop {
        match confirm.await {
            Ok(Confirmation::Ack(None) | Confirmation::NotRequested) => break Ok(()),
            Ok(Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_))) => {
                break Err(Error::new(
                    ErrorKind::Unroutable,
                    format!(
                        "no queue is bound to routing key {:?} on exchange {:?}",
                        out.routing_key.as_str(),
                        out.exchange.as_str()
                    ),
                ));
            }
            Ok(Confirmation::Nack(None)) => {
                break Err(Error::transport(format!(
                    "RabbitMQ refused the message for {:?} (nack)",
                    out.routing_key.as_str()
                )));
            }
            Err(e) => {
                tracing::debug!(error = %e, generation, "confirm lost with the connection; publishing again");
                let _ = lost.send(generation);
                match send(&mut link, &lost, &out, Some(generation), deadline).await {
                    Ok((g, c)) => {
                        generation = g;
                        confirm = c;
                    }
                    Err(e) => break Err(e),
                }
            }
        }
    };
    drop(permit);
    result
}
