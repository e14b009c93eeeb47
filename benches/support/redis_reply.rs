//! Reading the replies of Redis stream commands, for the benches that talk to Redis directly.

use redis::Value;

/// The entry ids of an `XREADGROUP` reply, stream after stream.
pub fn entry_ids(reply: &Value) -> Vec<Vec<u8>> {
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
