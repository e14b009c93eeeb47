//! The HTTP side both services share: errors as JSON with the status that says what to do,
//! the extractor settings that turn a malformed request into a 400, a request log through
//! `tracing`, and the read endpoints (`GET /<table>s`, `GET /<table>s/{id}`).

use std::fmt;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use sea_orm::{DatabaseConnection, DbErr, QueryOrder, SqlErr};
use serde_json::json;

use super::entities::Table;

/// An error answered as `{"error": "..."}` with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// 400: the request itself is wrong; the message says how.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: no such row (or route).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 405: the route exists, not with this method.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, message)
    }

    /// 409: the request conflicts with the rows as they are (a taken primary key, a row
    /// others still refer to).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 503: the service is stopping.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// The status answered.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(json!({ "error": self.message }))
    }
}

/// What a database error means to the client: a taken primary key is a conflict; bad data
/// (`NOT NULL`, `CHECK`, a number out of range) is the client's; the rest is ours (500, with
/// the database's message, which names no credentials).
impl From<cqrs_sync::Error> for ApiError {
    fn from(err: cqrs_sync::Error) -> Self {
        use cqrs_sync::ErrorKind;
        match sql_error(&err) {
            Some(SqlErr::UniqueConstraintViolation(_)) => {
                return Self::conflict("a row with this primary key exists");
            }
            Some(SqlErr::ForeignKeyConstraintViolation(_)) => {
                return Self::conflict(
                    "the row refers to a row that does not exist, or is referred to",
                );
            }
            _ => {}
        }
        match err.kind() {
            ErrorKind::InvalidData | ErrorKind::Config => Self::bad_request(err.message()),
            kind => {
                tracing::error!(error = %err, "request failed");
                let status = if kind == ErrorKind::Unavailable {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                Self::new(status, err.to_string())
            }
        }
    }
}

impl From<DbErr> for ApiError {
    fn from(err: DbErr) -> Self {
        cqrs_sync::orm::db_error("database", err).into()
    }
}

/// The SQL error under a cqrs-sync error, if a database refused the statement.
pub fn sql_error(err: &cqrs_sync::Error) -> Option<SqlErr> {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(db) = e.downcast_ref::<DbErr>() {
            return db.sql_err();
        }
        source = e.source();
    }
    None
}

/// A JSON body of any content type (so that `curl -d '{...}'` works as it is), at most 64 KiB;
/// a body that is not JSON, or not the expected JSON, is a 400 saying why.
pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .content_type_required(false)
        .content_type(|_| true)
        .limit(64 * 1024)
        .error_handler(|err, _req| ApiError::bad_request(err.to_string()).into())
}

/// A path segment that is not the key's type (`/authors/abc`) is a 400 saying what it should be.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default()
        .error_handler(|err, _req| ApiError::bad_request(format!("in the path: {err}")).into())
}

/// The answer to a route that does not exist.
pub async fn no_route(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(format!(
        "no route {} {}",
        req.method(),
        req.path()
    )))
}

/// The answer to a route that exists, with a method it does not take.
pub async fn wrong_method(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::method_not_allowed(format!(
        "{} is not allowed on {}",
        req.method(),
        req.path()
    )))
}

/// Logs every request once it is answered: method, path, status and milliseconds.
pub async fn log_request(
    req: ServiceRequest,
    next: actix_web::middleware::Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let (method, path) = (req.method().clone(), req.path().to_owned());
    let started = std::time::Instant::now();
    let res = next.call(req).await?;
    tracing::info!(
        %method,
        %path,
        status = res.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    Ok(res)
}

/// The database connection the HTTP handlers use: a pool of its own, apart from the one the
/// system's actors use. A connection stays tied to the runtime that opened it, and the HTTP
/// workers' runtimes end before the system shuts down.
#[derive(Clone)]
pub struct HttpDb(pub DatabaseConnection);

/// `GET /<table>s`: every row, in primary-key order.
pub async fn list<T: Table>(db: web::Data<HttpDb>) -> Result<HttpResponse, ApiError> {
    let rows = T::find().order_by_asc(T::pk()).all(&db.0).await?;
    Ok(HttpResponse::Ok().json(rows))
}

/// `GET /<table>s/{id}`: one row, or 404.
pub async fn get<T: Table>(
    db: web::Data<HttpDb>,
    id: web::Path<T::Pk>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    match T::find_by_id(id.clone()).one(&db.0).await? {
        Some(row) => Ok(HttpResponse::Ok().json(row)),
        None => Err(ApiError::not_found(format!(
            "{} {id} not found",
            T::CQRS_ID
        ))),
    }
}
