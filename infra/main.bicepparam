// Parameters for main.bicep. Secrets are read from the deploying shell's environment at build time, so no
// secret is ever written here (README.md, Deploy to Azure, step 3).
using './main.bicep'

param graphClientId = readEnvironmentVariable('GRAPH_CLIENT_ID')
param graphClientSecret = readEnvironmentVariable('GRAPH_CLIENT_SECRET')
param enrollioSharedSecret = readEnvironmentVariable('ENROLLIO_SHARED_SECRET')
param tokenEncryptionKeys = readEnvironmentVariable('TOKEN_ENCRYPTION_KEYS')
param enrollioReturnUrls = readEnvironmentVariable('ENROLLIO_RETURN_URLS')
param alertEmail = readEnvironmentVariable('ALERT_EMAIL', '')
