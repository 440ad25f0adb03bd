//! A kubelet PodResources server on a Unix socket (`v1.PodResourcesLister/List`), written
//! the way tonic's generated code is, over the agent's own message types. Tests set which
//! device IDs pods hold.

use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use dpdk_node_agent::podresources::{
    ContainerDevices, ContainerResources, LIST_PATH, ListPodResourcesRequest,
    ListPodResourcesResponse, PodResources,
};

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

#[derive(Clone)]
pub struct Lister {
    pub held: Arc<Mutex<Vec<String>>>,
}

impl tonic::server::NamedService for Lister {
    const NAME: &'static str = "v1.PodResourcesLister";
}

struct ListSvc(Arc<Mutex<Vec<String>>>);

impl tonic::server::UnaryService<ListPodResourcesRequest> for ListSvc {
    type Response = ListPodResourcesResponse;
    type Future = BoxFut<Result<tonic::Response<ListPodResourcesResponse>, tonic::Status>>;
    fn call(&mut self, _req: tonic::Request<ListPodResourcesRequest>) -> Self::Future {
        let ids = self.0.lock().expect("lock").clone();
        Box::pin(async move {
            Ok(tonic::Response::new(ListPodResourcesResponse {
                pod_resources: vec![PodResources {
                    name: "dpdk-app".into(),
                    namespace: "default".into(),
                    containers: vec![ContainerResources {
                        name: "app".into(),
                        devices: vec![ContainerDevices {
                            resource_name: "intel.com/intel_sriov_netdevice_2".into(),
                            device_ids: ids,
                        }],
                    }],
                }],
            }))
        })
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Lister {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFut<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let held = self.held.clone();
        if req.uri().path() == LIST_PATH {
            Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.unary(ListSvc(held), req).await)
            })
        } else {
            Box::pin(async move { Ok(tonic::Status::unimplemented("only List").into_http()) })
        }
    }
}

/// Serves on `socket` until the runtime ends; returns the shared list of held device IDs.
pub async fn serve(socket: &Path) -> Arc<Mutex<Vec<String>>> {
    let held = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::UnixListener::bind(socket).expect("bind the PodResources socket");
    let svc = Lister { held: held.clone() };
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await;
    });
    held
}
