//! The raw consumer of the benches that talk to Redis streams directly: `XREADGROUP` of the
//! group `g`, each read acknowledged with one `XACK`.

use redis::Value;
use redis::aio::MultiplexedConnection;

/// Reads up to `count` new entries of `key` as `consumer` of group `g`, waiting up to
/// `block_ms`, and acknowledges them. Answers how many there were.
pub async fn read_and_ack(
    conn: &mut MultiplexedConnection,
    key: &str,
    consumer: &str,
    count: usize,
    block_ms: u64,
) -> redis::RedisResult<usize> {
    let reply: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(block_ms)
        .arg("STREAMS")
        .arg(key)
        .arg(">")
        .query_async(conn)
        .await?;
    let ids = entry_ids(&reply);
    if !ids.is_empty() {
        let _: i64 = redis::cmd("XACK")
            .arg(key)
            .arg("g")
            .arg(&ids)
            .query_async(conn)
            .await?;
    }
    Ok(ids.len())
}

/// The entry ids of an `XREADGROUP` reply, stream after stream.
fn entry_ids(reply: &Value) -> Vec<Vec<u8>> {
    let Value::Array(streams) = reply else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    for stream in streams {
        if let Value::Array(pair) = stream
            && let Some(Value::Array(entries)) = pair.get(1)
        {
            for entry in entries {
                if let Value::Array(e) = entry
                    && let Some(Value::BulkString(id)) = e.first()
                {
                    ids.push(id.clone());
                }
            }
        }
    }
    ids
}
