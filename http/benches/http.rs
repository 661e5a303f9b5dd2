//! Per-request cost of palisade-http on the happy path, against a bare `service_fn` (the
//! floor): the rejection-to-response layer (with its error boxing), the key extractors a
//! keyed limit runs on every request, and the client classifier.

use std::future::{Ready, ready};
use std::hint::black_box;
use std::net::SocketAddr;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{Request, Response};
use palisade_core::{BoxError, Classify};
use palisade_http::key::{ClientIp, HeaderKey};
use palisade_http::{HttpClassifier, RejectionResponseLayer};
use tower::{Layer, Service, ServiceExt, service_fn};

type Res = Response<Bytes>;

fn handler()
-> impl Service<Request<()>, Response = Res, Error = BoxError, Future = Ready<Result<Res, BoxError>>>
+ Clone {
    service_fn(|_req: Request<()>| ready(Ok::<_, BoxError>(Response::new(Bytes::new()))))
}

fn once<S>(svc: &mut S) -> S::Response
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    let ready = svc
        .ready()
        .now_or_never()
        .expect("ready at once")
        .expect("ready");
    ready
        .call(Request::new(()))
        .now_or_never()
        .expect("at once")
        .expect("answers")
}

fn server(c: &mut Criterion) {
    let mut g = c.benchmark_group("server");
    let mut floor = handler();
    g.bench_function("service_fn (floor)", |b| {
        b.iter(|| black_box(once(&mut floor)));
    });
    let mut layered = RejectionResponseLayer::default()
        .around(tower_layer::Identity::new())
        .layer(handler());
    g.bench_function("RejectionResponse around BoxErrors", |b| {
        b.iter(|| black_box(once(&mut layered)));
    });
    g.finish();
}

fn keys(c: &mut Criterion) {
    let mut g = c.benchmark_group("keys");
    let req = Request::builder()
        .header("x-forwarded-for", "198.51.100.7, 203.0.113.9, 10.0.0.2")
        .header("x-api-key", "k-0123456789")
        .extension(SocketAddr::from(([10, 0, 0, 1], 443)))
        .body(())
        .expect("request");
    let peer = ClientIp::peer().key_fn::<()>();
    g.bench_function("ClientIp::peer", |b| {
        b.iter(|| black_box(peer(black_box(&req))));
    });
    let xff = ClientIp::x_forwarded_for(2).key_fn::<()>();
    g.bench_function("ClientIp::x_forwarded_for(2)", |b| {
        b.iter(|| black_box(xff(black_box(&req))));
    });
    let header = HeaderKey::new(http::HeaderName::from_static("x-api-key")).key_fn::<()>();
    g.bench_function("HeaderKey", |b| {
        b.iter(|| black_box(header(black_box(&req))));
    });
    g.finish();
}

fn classify(c: &mut Criterion) {
    let ok: Result<Res, BoxError> = Ok(Response::new(Bytes::new()));
    c.bench_function("HttpClassifier (200)", |b| {
        b.iter(|| black_box(HttpClassifier.classify(black_box(&ok))));
    });
}

criterion_group!(benches, server, keys, classify);
criterion_main!(benches);
