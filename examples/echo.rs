//! The ceiling for any HTTP write on this machine: an axum server that parses the same JSON
//! bodies as openraft-memory's REST API and answers at once, with no consensus and no state.
//! `scripts/bench.sh` measures it next to the cluster, with the same load generator.
//!
//!   cargo run --release --example echo -- 127.0.0.1:9090

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Student {
    id: i64,
    name: String,
    score: f32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    name: String,
    score: f32,
}

async fn create(Json(s): Json<Student>) -> (StatusCode, Json<Student>) {
    (StatusCode::CREATED, Json(s))
}

async fn update(Path(id): Path<i64>, Json(u): Json<Update>) -> Json<Student> {
    Json(Student {
        id,
        name: u.name,
        score: u.score,
    })
}

async fn read(Path(id): Path<i64>) -> Json<Student> {
    Json(Student {
        id,
        name: format!("echo {id}"),
        score: 1.0,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9090".into());
    let app = Router::new()
        .route("/students", post(create))
        .route("/students/{id}", get(read).put(update));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("echo: listening on http://{addr}");
    axum::serve(listener, app).await?;
    Ok(())
}
