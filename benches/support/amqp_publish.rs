//! The raw lapin publisher of the RabbitMQ ceilings: persistent publishes with confirms, a
//! window of unconfirmed ones, and no wait for lapin's I/O thread between two publishes.
//!
//! lapin queues a publish's frames on its first poll and resolves the publish only once its
//! I/O thread wrote them. Awaiting each publish in turn hands every message to that thread on
//! its own, and the broker reads them one at a time; polling each publish once and keeping it
//! with its confirm lets the thread write many at once, which is what the transport does. A
//! ceiling must be the best the broker can do, so it publishes the same way.

use std::future::poll_fn;
use std::task::Poll;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel, Confirmation};

/// Publishes `n` messages (the bodies in turn) to `exchange` with `routing_key` on a channel in
/// confirm mode, at most `window` unconfirmed; returns once the broker confirmed them all.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    n: usize,
    bodies: &[Vec<u8>],
    properties: &BasicProperties,
    window: usize,
) -> lapin::Result<()> {
    let mut pending: FuturesUnordered<BoxFuture<'static, lapin::Result<Confirmation>>> =
        FuturesUnordered::new();
    for i in 0..n {
        if pending.len() >= window
            && let Some(done) = pending.next().await
        {
            done?;
        }
        let (channel, properties) = (channel.clone(), properties.clone());
        let (exchange, routing_key) = (exchange.to_owned(), routing_key.to_owned());
        let body = bodies[i % bodies.len()].clone();
        let mut publish: BoxFuture<'static, lapin::Result<Confirmation>> = Box::pin(async move {
            channel
                .basic_publish(
                    exchange.as_str().into(),
                    routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    properties,
                )
                .await?
                .await
        });
        match poll_fn(|cx| Poll::Ready(publish.as_mut().poll(cx))).await {
            Poll::Ready(done) => {
                done?;
            }
            Poll::Pending => pending.push(publish),
        }
    }
    while let Some(done) = pending.next().await {
        done?;
    }
    Ok(())
}
