//! Confinement of ONNX external data: a model may only reference tensor data
//! files inside its own version directory.
//!
//! Only the few protobuf fields that can carry an external-data location are
//! declared; prost skips everything else, so this reads a model without a
//! full ONNX schema.

use std::path::{Component, Path};

use prost::Message;

#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "25")]
    functions: Vec<FunctionProto>,
}

#[derive(Clone, PartialEq, Message)]
struct FunctionProto {
    #[prost(message, repeated, tag = "7")]
    node: Vec<NodeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "15")]
    sparse_initializer: Vec<SparseTensorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<AttributeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct AttributeProto {
    #[prost(message, optional, tag = "5")]
    t: Option<TensorProto>,
    #[prost(message, optional, tag = "6")]
    g: Option<GraphProto>,
    #[prost(message, repeated, tag = "10")]
    tensors: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    graphs: Vec<GraphProto>,
    #[prost(message, optional, tag = "22")]
    sparse_tensor: Option<SparseTensorProto>,
    #[prost(message, repeated, tag = "23")]
    sparse_tensors: Vec<SparseTensorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(string, optional, tag = "8")]
    name: Option<String>,
    #[prost(message, repeated, tag = "13")]
    external_data: Vec<StringStringEntryProto>,
}

#[derive(Clone, PartialEq, Message)]
struct SparseTensorProto {
    #[prost(message, optional, tag = "1")]
    values: Option<TensorProto>,
    #[prost(message, optional, tag = "2")]
    indices: Option<TensorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct StringStringEntryProto {
    #[prost(string, optional, tag = "1")]
    key: Option<String>,
    #[prost(string, optional, tag = "2")]
    value: Option<String>,
}

/// Why a model's external-data references were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExternalError {
    #[error("model.onnx is not a valid ONNX model ({0})")]
    NotOnnx(String),
    #[error("version directory unreadable: {0}")]
    Unreadable(String),
    #[error("external data location '{0}' escapes the version directory")]
    Escapes(String),
    #[error("external data location '{0}' resolves outside the version directory")]
    ResolvesOutside(String),
    #[error("external data file '{0}' is missing")]
    Missing(String),
}

/// Checks that every external-data location in `model_bytes` stays inside
/// `version_dir` (also through symlinks). Returns the locations referenced.
pub(crate) fn check_confined(model_bytes: &[u8], version_dir: &Path) -> Result<Vec<String>, ExternalError> {
    let model = ModelProto::decode(model_bytes).map_err(|e| ExternalError::NotOnnx(e.to_string()))?;
    let mut locations = Vec::new();
    if let Some(g) = &model.graph {
        graph_locations(g, &mut locations);
    }
    for f in &model.functions {
        nodes_locations(&f.node, &mut locations);
    }
    let root = version_dir
        .canonicalize()
        .map_err(|e| ExternalError::Unreadable(e.to_string()))?;
    for loc in &locations {
        let rel = Path::new(loc);
        let lexically_inside = rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !lexically_inside {
            return Err(ExternalError::Escapes(loc.clone()));
        }
        let resolved = version_dir.join(rel);
        match resolved.canonicalize() {
            Ok(real) if real.starts_with(&root) => {}
            Ok(_) => return Err(ExternalError::ResolvesOutside(loc.clone())),
            Err(_) => return Err(ExternalError::Missing(loc.clone())),
        }
    }
    Ok(locations)
}

fn graph_locations(g: &GraphProto, out: &mut Vec<String>) {
    for t in &g.initializer {
        tensor_location(t, out);
    }
    for s in &g.sparse_initializer {
        sparse_locations(s, out);
    }
    nodes_locations(&g.node, out);
}

fn nodes_locations(nodes: &[NodeProto], out: &mut Vec<String>) {
    for a in nodes.iter().flat_map(|n| &n.attribute) {
        a.t.iter().chain(&a.tensors).for_each(|t| tensor_location(t, out));
        a.g.iter().chain(&a.graphs).for_each(|g| graph_locations(g, out));
        a.sparse_tensor
            .iter()
            .chain(&a.sparse_tensors)
            .for_each(|s| sparse_locations(s, out));
    }
}

fn sparse_locations(s: &SparseTensorProto, out: &mut Vec<String>) {
    s.values
        .iter()
        .chain(&s.indices)
        .for_each(|t| tensor_location(t, out));
}

fn tensor_location(t: &TensorProto, out: &mut Vec<String>) {
    let _ = &t.name;
    for e in &t.external_data {
        if e.key.as_deref() == Some("location") {
            out.push(e.value.clone().unwrap_or_default());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_with_location(loc: &str) -> Vec<u8> {
        let tensor = TensorProto {
            name: Some("w".into()),
            external_data: vec![StringStringEntryProto {
                key: Some("location".into()),
                value: Some(loc.into()),
            }],
        };
        ModelProto {
            graph: Some(GraphProto {
                node: vec![],
                initializer: vec![tensor],
                sparse_initializer: vec![],
            }),
            functions: vec![],
        }
        .encode_to_vec()
    }

    #[test]
    fn locations_must_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let version = dir.path().join("m").join("1");
        std::fs::create_dir_all(&version).unwrap();
        std::fs::write(version.join("w.bin"), [0u8; 16]).unwrap();
        std::fs::write(dir.path().join("secret.bin"), [0u8; 16]).unwrap();
        assert_eq!(
            check_confined(&model_with_location("w.bin"), &version).unwrap(),
            vec!["w.bin".to_string()]
        );
        for bad in ["../../secret.bin", "/etc/passwd", "sub/../../x"] {
            let err = check_confined(&model_with_location(bad), &version).unwrap_err();
            assert!(matches!(err, ExternalError::Escapes(_)), "{bad}: {err}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("secret.bin"), version.join("link.bin")).unwrap();
            let err = check_confined(&model_with_location("link.bin"), &version).unwrap_err();
            assert!(matches!(err, ExternalError::ResolvesOutside(_)), "{err}");
        }
        assert!(check_confined(b"\xff\xff\xff", &version).is_err());
    }
}
