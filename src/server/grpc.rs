//! The gRPC API (`proto/quiver.proto`, tonic): the operations of the REST API over the same
//! shared operations (`ops.rs`). JSON-valued fields (metadata, filters, configs) carry the JSON
//! the REST API takes; errors become gRPC statuses whose message starts with the REST error code.

use std::sync::Arc;

use serde_json::Value;
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use super::error::ApiError;
use super::{constant_time_eq, ops, AppState};
use crate::collection::ScrollPage;
use crate::error::Error;
use crate::query::{FusionKind, Include, SearchRequest, SearchResponse};
use crate::types::{Document, DocumentInput};

/// Code generated from `proto/quiver.proto`: messages, the server trait and a client.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("quiver.v1");
}

use proto::quiver_server::Quiver;

/// The gRPC service.
pub(super) struct Service {
    state: Arc<AppState>,
}

type Answer<T> = Result<Response<T>, Status>;

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Status {
        let code = match error.status.as_u16() {
            400 | 413 | 422 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            404 => Code::NotFound,
            408 => Code::DeadlineExceeded,
            409 => Code::AlreadyExists,
            503 => Code::Unavailable,
            _ => Code::Internal,
        };
        Status::new(code, format!("{}: {}", error.code, error.message))
    }
}

fn invalid(message: impl Into<String>) -> Status {
    ApiError::from(Error::InvalidArgument(message.into())).into()
}

fn parse_id(id: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(id).map_err(|_| invalid(format!("{id:?} is not a UUID")))
}

/// Parses an optional JSON field (empty string = absent).
fn json_field(field: &str, text: Option<&str>) -> Result<Option<Value>, Status> {
    match text.filter(|t| !t.trim().is_empty()) {
        None => Ok(None),
        Some(text) => serde_json::from_str(text)
            .map(Some)
            .map_err(|e| invalid(format!("{field} is not JSON: {e}"))),
    }
}

fn to_json(value: &impl serde::Serialize) -> Result<String, Status> {
    serde_json::to_string(value).map_err(|e| Status::internal(e.to_string()))
}

fn document_out(doc: Document) -> Result<proto::Document, Status> {
    Ok(proto::Document {
        id: doc.id.to_string(),
        metadata_json: to_json(&doc.metadata)?,
        vector: doc.vector,
        text: doc.text,
    })
}

fn document_in(doc: proto::DocumentInput) -> Result<DocumentInput, Status> {
    Ok(DocumentInput {
        id: doc.id.as_deref().map(parse_id).transpose()?,
        vector: doc.vector,
        metadata: json_field("metadata_json", Some(&doc.metadata_json))?.unwrap_or(Value::Null),
        text: doc.text,
    })
}

fn search_in(request: proto::SearchRequest) -> Result<SearchRequest, Status> {
    let filter = json_field("filter_json", request.filter_json.as_deref())?
        .map(|f| crate::filter::Filter::from_json(&f))
        .transpose()
        .map_err(|e| Status::from(ApiError::from(e)))?;
    let fusion = request
        .fusion
        .as_deref()
        .map(str::parse::<FusionKind>)
        .transpose()
        .map_err(|e| Status::from(ApiError::from(e)))?;
    let include =
        Include::try_from(request.include).map_err(|e| Status::from(ApiError::from(e)))?;
    let to_usize = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
    Ok(SearchRequest {
        vector: (!request.vector.is_empty()).then_some(request.vector),
        text: request.text,
        k: if request.k == 0 {
            10
        } else {
            to_usize(request.k)
        },
        include,
        ef: request.ef.map(to_usize),
        filter,
        nprobe: request.nprobe.map(to_usize),
        refine: request.refine.map(to_usize),
        search_l: request.search_l.map(to_usize),
        beam: request.beam.map(to_usize),
        fusion,
        alpha: request.alpha,
        rrf_k: request.rrf_k,
        candidates: request.candidates.map(to_usize),
    })
}

fn search_out(response: SearchResponse) -> Result<proto::SearchResponse, Status> {
    let arm = |rank: usize, value: f32| proto::Arm {
        rank: u32::try_from(rank).unwrap_or(u32::MAX),
        value,
    };
    let hits = response
        .hits
        .into_iter()
        .map(|hit| {
            let arms = hit.arms.unwrap_or_default();
            Ok(proto::Hit {
                id: hit.id.to_string(),
                distance: hit.distance,
                score: hit.score,
                vector_arm: arms.vector.map(|a| arm(a.rank, a.distance)),
                keyword_arm: arms.keyword.map(|a| arm(a.rank, a.score)),
                metadata_json: hit.metadata.as_ref().map(to_json).transpose()?,
                text: hit.text,
                vector: hit.vector.unwrap_or_default(),
            })
        })
        .collect::<Result<_, Status>>()?;
    Ok(proto::SearchResponse {
        hits,
        strategy: response.strategy,
        exhaustive: response.exhaustive,
        examined: response.examined as u64,
        filter_matches: response.filter_matches,
    })
}

fn scroll_out(page: ScrollPage) -> Result<proto::ScrollResponse, Status> {
    Ok(proto::ScrollResponse {
        documents: page
            .documents
            .into_iter()
            .map(document_out)
            .collect::<Result<_, _>>()?,
        next_cursor: page.next_cursor,
    })
}

#[tonic::async_trait]
impl Quiver for Service {
    async fn list_collections(
        &self,
        _request: Request<proto::ListCollectionsRequest>,
    ) -> Answer<proto::ListCollectionsResponse> {
        Ok(Response::new(proto::ListCollectionsResponse {
            names: ops::list_collections(&self.state),
        }))
    }

    async fn create_collection(
        &self,
        request: Request<proto::CreateCollectionRequest>,
    ) -> Answer<proto::CollectionInfo> {
        let request = request.into_inner();
        let config = serde_json::from_str(&request.config_json)
            .map_err(|e| invalid(format!("config_json: {e}")))?;
        let info = ops::create_collection(self.state.clone(), request.name, config).await?;
        Ok(Response::new(proto::CollectionInfo {
            info_json: to_json(&info)?,
        }))
    }

    async fn get_collection(
        &self,
        request: Request<proto::CollectionRef>,
    ) -> Answer<proto::CollectionInfo> {
        let info = ops::describe_collection(self.state.clone(), request.into_inner().name).await?;
        Ok(Response::new(proto::CollectionInfo {
            info_json: to_json(&info)?,
        }))
    }

    async fn drop_collection(
        &self,
        request: Request<proto::CollectionRef>,
    ) -> Answer<proto::DropCollectionResponse> {
        ops::drop_collection(self.state.clone(), request.into_inner().name).await?;
        Ok(Response::new(proto::DropCollectionResponse {}))
    }

    async fn upsert(
        &self,
        request: Request<proto::UpsertRequest>,
    ) -> Answer<proto::UpsertResponse> {
        let request = request.into_inner();
        let documents = request
            .documents
            .into_iter()
            .map(document_in)
            .collect::<Result<_, _>>()?;
        let ids = ops::upsert(self.state.clone(), request.collection, documents).await?;
        Ok(Response::new(proto::UpsertResponse {
            ids: ids.iter().map(Uuid::to_string).collect(),
        }))
    }

    async fn get(&self, request: Request<proto::DocumentRef>) -> Answer<proto::Document> {
        let request = request.into_inner();
        let doc = ops::get(
            self.state.clone(),
            request.collection,
            parse_id(&request.id)?,
        )
        .await?;
        Ok(Response::new(document_out(doc)?))
    }

    async fn patch(&self, request: Request<proto::PatchRequest>) -> Answer<proto::Document> {
        let request = request.into_inner();
        let metadata = json_field(
            "metadata_patch_json",
            request.metadata_patch_json.as_deref(),
        )?;
        let vector = (!request.vector.is_empty()).then_some(request.vector);
        let id = parse_id(&request.id)?;
        let doc = ops::patch(self.state.clone(), request.collection, id, metadata, vector).await?;
        Ok(Response::new(document_out(doc)?))
    }

    async fn delete(
        &self,
        request: Request<proto::DeleteRequest>,
    ) -> Answer<proto::DeleteResponse> {
        let request = request.into_inner();
        let filter = json_field("filter_json", request.filter_json.as_deref())?;
        let ids = if request.ids.is_empty() && filter.is_some() {
            None
        } else {
            Some(
                request
                    .ids
                    .iter()
                    .map(|id| parse_id(id))
                    .collect::<Result<_, _>>()?,
            )
        };
        let deleted = ops::delete(self.state.clone(), request.collection, ids, filter).await?;
        Ok(Response::new(proto::DeleteResponse {
            deleted: deleted as u64,
        }))
    }

    async fn search(
        &self,
        request: Request<proto::SearchRequest>,
    ) -> Answer<proto::SearchResponse> {
        let request = request.into_inner();
        let collection = request.collection.clone();
        let response = ops::search(self.state.clone(), collection, search_in(request)?).await?;
        Ok(Response::new(search_out(response)?))
    }

    async fn search_batch(
        &self,
        request: Request<proto::SearchBatchRequest>,
    ) -> Answer<proto::SearchBatchResponse> {
        let request = request.into_inner();
        let requests = request
            .requests
            .into_iter()
            .map(search_in)
            .collect::<Result<_, _>>()?;
        let responses = ops::search_batch(self.state.clone(), request.collection, requests).await?;
        Ok(Response::new(proto::SearchBatchResponse {
            responses: responses
                .into_iter()
                .map(search_out)
                .collect::<Result<_, _>>()?,
        }))
    }

    async fn count(&self, request: Request<proto::CountRequest>) -> Answer<proto::CountResponse> {
        let request = request.into_inner();
        let filter = json_field("filter_json", request.filter_json.as_deref())?;
        let count = ops::count(self.state.clone(), request.collection, filter).await?;
        Ok(Response::new(proto::CountResponse { count }))
    }

    async fn scroll(
        &self,
        request: Request<proto::ScrollRequest>,
    ) -> Answer<proto::ScrollResponse> {
        let request = request.into_inner();
        let filter = json_field("filter_json", request.filter_json.as_deref())?;
        let limit = match request.limit {
            0 => super::routes::default_scroll_limit(),
            n => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let page = ops::scroll(
            self.state.clone(),
            request.collection,
            filter,
            limit,
            request.cursor,
        )
        .await?;
        Ok(Response::new(scroll_out(page)?))
    }
}

/// The gRPC service for `state`, with its API-key check and message size limit.
pub(super) fn service(
    state: Arc<AppState>,
    body_limit: usize,
) -> tonic::service::interceptor::InterceptedService<
    proto::quiver_server::QuiverServer<Service>,
    impl tonic::service::Interceptor + Clone,
> {
    let api_key = state.api_key.clone();
    let server = proto::quiver_server::QuiverServer::new(Service { state })
        .max_decoding_message_size(body_limit);
    tonic::service::interceptor::InterceptedService::new(server, move |request: Request<()>| {
        let Some(expected) = &api_key else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => Ok(request),
            _ => Err(Status::unauthenticated(
                "unauthorized: missing or wrong API key (authorization: Bearer KEY)",
            )),
        }
    })
}
