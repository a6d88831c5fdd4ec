//! The text modality: datasets, tokenization, classifiers trained by gibbon, and attacks built
//! from TextAttack's decomposition (Morris et al. 2020): a goal, constraints, a transformation
//! and a search, with every returned example re-verified against the constraints and re-scored
//! by the model.
pub mod data;
pub mod model;
pub mod tokenize;
pub mod train;

pub use data::{load_text_dataset, stratified_split, TextDataset, TextFormat};
pub use model::{TextArch, TextClassifier, TextModel};
pub use train::{accuracy, predict, train_text_model, train_text_model_augmented, TextTrainConfig};
pub mod attack;
pub mod augment;
pub mod constraints;
pub mod normalize;
pub mod onnx_model;
pub mod payload;
pub mod recipes;
pub mod remote;
pub mod search;
pub mod serve;
pub mod transform;

pub use attack::{attack_texts, TextAttackSettings, TextAttackSummary, TextSampleRecord};
pub use onnx_model::OnnxTextModel;
pub use recipes::{recipe_by_name, Recipe, RecipeContext};
pub use remote::{RemoteTextModel, TextModelServer};
