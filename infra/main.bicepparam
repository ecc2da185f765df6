// Parameters for main.bicep, on both paths: `az deployment group create --parameters infra/main.bicepparam` and
// `azd up` (azd compiles a module's .bicepparam in preference to its .bicep). Secrets are read from the deploying
// shell's environment at build time, so no secret is ever written here, nor in azd's .azure/ folder as long as
// they are exported rather than `azd env set` (README.md, Deploy to Azure).
using './main.bicep'

param graphClientId = readEnvironmentVariable('GRAPH_CLIENT_ID')
param graphClientSecret = readEnvironmentVariable('GRAPH_CLIENT_SECRET')
param enrollioSharedSecret = readEnvironmentVariable('ENROLLIO_SHARED_SECRET')
param tokenEncryptionKeys = readEnvironmentVariable('TOKEN_ENCRYPTION_KEYS')
param enrollioReturnUrls = readEnvironmentVariable('ENROLLIO_RETURN_URLS')
param enrollioEventsUrl = readEnvironmentVariable('ENROLLIO_EVENTS_URL', '')
param enrollioEventsSecret = readEnvironmentVariable('ENROLLIO_EVENTS_SECRET', '')
param alertEmail = readEnvironmentVariable('ALERT_EMAIL', '')
